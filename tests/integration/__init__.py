import pytest

# Shared helpers assert too: rewrite them as pytest rewrites a test module, so that their
# failures show the values (this runs before conftest.py imports any of them).
pytest.register_assert_rewrite("tests.integration.dbus_fixtures", "tests.integration.harness")
