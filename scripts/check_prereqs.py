"""Check what `make` cannot install itself: Python 3.11+ and Java 17 (for PySpark)."""

import re
import shutil
import subprocess
import sys

problems = []
if sys.version_info < (3, 11):  # noqa: UP036 (this script runs before the venv exists)
    problems.append(f"Python 3.11+ is needed, this is {sys.version.split()[0]}.")

java = shutil.which("java")
if java is None:
    problems.append(
        "Java 17 is needed by PySpark and `java` is not on PATH. Install it:\n"
        "    Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless\n"
        "    macOS:         brew install openjdk@17\n"
        "then make sure `java -version` prints 17 (or set JAVA_HOME)."
    )
else:
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    found = re.search(r'version "(\d+)', out)
    if found and int(found.group(1)) < 17:
        problems.append(f"Java 17+ is needed by PySpark; `java -version` says: {out.splitlines()[0]}")

if problems:
    print("Cannot set up:\n- " + "\n- ".join(problems), file=sys.stderr)
    sys.exit(1)
