#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Documentation only: the work is done on the controller by action_plugins/mage_lxd_config.py.
# The boilerplate ansible-test (up to 2.16) wants in every module file, even a documentation-only one.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: mage_lxd_config
short_description: Apply config files to a service in an LXD instance and converge on what it runs
description:
  - Compares O(files) with what the instance holds through the LXD files API, reads O(record) (the
    digests of the files the service last loaded, written only after a reload or start succeeded),
    checks that the service runs (O(running)) and that its whole configuration passes O(test).
    When all of that holds, nothing changes and nothing is reloaded.
  - Otherwise runs O(prepare), journals the previous files in O(record), writes the changed files,
    runs O(test), then O(reload) (or O(start) when the service was down) and O(probe). If any step
    fails, whatever the failure (a refused config, a broken connection, an interrupt), the previous
    files are put back, O(undo_prepare) runs, and the task fails naming the step and what the
    service said; it says what is served only after O(probe) answered.
  - A run cut off anywhere leaves the journal behind; the next run completes that change (the files
    pass the test and are loaded) or puts the journalled files back.
  - A file the test refuses that this task does not manage (a foreign C(conf.d) file) is named as such.
  - Works through the task's own mage_lxd connection (the host must be an LXD instance reached with
    C(ansible_connection=mage.lxd.mage_lxd), as the mage_lxd inventory sets); the mageproxy role uses
    it for nginx.
version_added: "0.2.0"
author: mage-lxd developers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Reports which files would change and what would be done; changes nothing.
  diff_mode:
    support: full
    description: Before/after text of each changed file.
options:
  files:
    description: Absolute path in the instance to the full text it must hold (owner root, mode 0644 unless O(modes) says).
    type: dict
    required: true
  modes:
    description: Path to a quoted octal mode (C('0600')) for files that must not be 0644.
    type: dict
  require:
    description: Absolute paths that must already be in the instance (files the config names but this
      task does not write), each to who names it (for the error); checked before any change.
    type: dict
  require_pem:
    description: Paths of O(require) that must hold a PEM block, each to its label (C(CERTIFICATE),
      C(PRIVATE KEY); a label that ends so, such as C(EC PRIVATE KEY), counts); checked before any change.
    type: dict
  sections:
    description:
      - A path of O(files) made of sections (C(# mage-lxd section LABEL) to C(# mage-lxd section end)).
        When O(test) refuses the files, the sections it refuses are found by bisection (candidates are
        written and tested, nothing is reloaded meanwhile), left out with a warning naming them (see
        O(section_owners)), and the rest goes live. The record keeps what was left out of which text
        (and of which O(require) files), so a rerun with the same ones reloads nothing.
      - When the text without any section fails too, nothing of that file is to blame, and the task
        fails as without O(sections).
    type: str
  section_owners:
    description: Section label to who it is, for the warnings (mageproxy - the instances and routes of a site).
    type: dict
  record:
    description: Absolute path in the instance of the record (digests loaded, journal of a change).
      Without it, a file written by a run cut off before its reload is taken for live.
    type: str
  functions:
    description: Shell text (function definitions) run before each command below, so commands can be short names.
    type: str
  prepare:
    description: Shell command run before the files are written (only when something is applied).
    type: str
  test:
    description: Shell command that must succeed with the files in place, e.g. C(nginx -t); run on every run.
    type: str
  reload:
    description: Shell command that makes the running service use them, e.g. C(nginx -s reload).
    type: str
  running:
    description: Shell command that exits 0 when the service runs; run on every run.
    type: str
  start:
    description: Shell command that starts the service when O(running) said it does not run.
    type: str
  probe:
    description: Shell command that makes a request to the service and exits 0 when it answered.
    type: str
  undo_prepare:
    description: Shell command run after the files were put back, to undo O(prepare).
    type: str
"""

EXAMPLES = r"""
- name: nginx config, tested whole before it goes live
  mage.lxd.mage_lxd_config:
    files:
      /etc/nginx/conf.d/site.conf: "{{ lookup('ansible.builtin.template', 'site.conf.j2') }}"
    record: /etc/nginx/mage-lxd-applied
    test: nginx -t
    reload: nginx -s reload
    running: kill -0 "$(cat /run/nginx.pid)"
    start: nginx
    probe: curl -fsS -o /dev/null http://127.0.0.1/
  register: nginx_config

- name: What changed and what is served
  ansible.builtin.debug:
    msg: "{{ nginx_config.files }}: {{ nginx_config.msg }}"
"""

# Every key the task returns but changed and failed (which every task has).
RETURN = r"""
files:
  description: The paths of O(files) whose text differed from the instance's, so were written (or would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/etc/nginx/conf.d/site.conf]
actions:
  description:
    - What else was done or needed, in order.
    - C(a previous run was cut off before it finished; completing or undoing it),
      C(the service is not running; starting it), C(the files on disk were never reloaded; reloading).
  returned: always
  type: list
  elements: str
  sample: []
left_out:
  description: One sentence per section of O(sections) left out because O(test) refused it (also warnings).
  returned: always
  type: list
  elements: str
  sample: []
msg:
  description:
    - After a change, with O(probe), what is served, said only after the probe answered (or that the
      service does not answer, and nothing is served).
    - Otherwise RV(actions) joined with C(; ), or empty (nothing to do, check mode, no O(probe)).
  returned: always
  type: str
  sample: The service was reloaded and answered a request.
diff:
  description:
    - Before and after text of each changed file (C(before_header), C(after_header), C(before), C(after)),
      in check mode and outside diff mode too.
    - "A file whose mode does not let others read it (a key) shows C((not shown: mode 0600)) instead of its text."
  returned: always
  type: list
  elements: dict
  sample:
    - before_header: /etc/nginx/conf.d/site.conf
      after_header: /etc/nginx/conf.d/site.conf
      before: ""
      after: "server { listen 80; }"
"""
