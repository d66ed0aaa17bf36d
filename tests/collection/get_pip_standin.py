# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stands in for get-pip.py, which ansible-test downloads from a host this machine cannot reach.

ansible-test runs it inside a fresh venv with pip's install arguments. Python's own ensurepip
gives the venv a pip with no download; that pip then installs what ansible-test asked for.
"""

from __future__ import annotations

import subprocess
import sys

# Flags of get-pip.py itself, not of pip install.
OWN_FLAGS = ("--no-setuptools", "--no-wheel")

subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
args = [arg for arg in sys.argv[1:] if arg not in OWN_FLAGS]
sys.exit(subprocess.run([sys.executable, "-m", "pip", "install", *args], check=False).returncode)
