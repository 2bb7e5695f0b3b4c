#!/usr/bin/env bash
# Print "VERSION PATH" for each Python the suite must run under (the ones Venus OS ships).
# A version that cannot be found is printed as "VERSION -".
set -u
for want in 3.8 3.12; do
  found=-
  for candidate in "python$want" \
      "$(pyenv root 2>/dev/null)"/versions/"$want".*/bin/python \
      /usr/bin/"python$want" /usr/local/bin/"python$want"; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$want'" 2>/dev/null; then
      found=$(command -v "$candidate"); break
    fi
  done
  echo "$want $found"
done
