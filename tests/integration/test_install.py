#!/usr/bin/python3
# backends: sqlite
"""Installing and operating ckptd (SPEC 1): `make install` (PREFIX, DESTDIR),
the systemd unit, the man page and /metrics, each checked with the tool that
judges it.

- `make install DESTDIR=... PREFIX=/usr/local` puts the binary, docs/ckptd.1
  and dist/ckptd.service (with its paths filled in) where they belong, keeps
  an environment file the administrator changed, and `make uninstall` removes
  what it put.
- The installed unit passes `systemd-analyze verify` (offline: no systemd
  needs to run), has the hardening it promises, and `systemd-analyze security
  --offline` rates its exposure below 2 ("OK").
- The man page renders with `groff -ww` and `man --warnings` without a
  warning, and names exactly the commands and flags `ckptd --help` lists.
- `promtool check metrics` (Debian's prometheus) accepts a real /metrics
  answer after uploads, downloads and errors.

Each tool is also shown a broken input once, so the check can fail.
Tools: systemd (systemd-analyze), man-db and groff-base, prometheus
(promtool); tools/deps.sh test installs them.
"""

import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import ckptd, harness  # noqa: E402

REPO = ckptd.REPO
MAN = os.path.join(REPO, "docs", "ckptd.1")
TORCH = os.path.join(REPO, "tests", "data", "torch", "valid")
HARDENING = [
    "DynamicUser=yes", "StateDirectory=ckptd", "ReadWritePaths=/var/lib/ckptd",
    "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
    "NoNewPrivileges=yes", "CapabilityBoundingSet=", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes",
]


def need(tool, package):
    path = shutil.which(tool)
    if not path:
        raise AssertionError("%s is missing: apt-get install %s (sh tools/deps.sh test)" % (tool, package))
    return path


def run(cmd, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 300)
    return subprocess.run(cmd, **kw)


def make(*args):
    """Runs make in the source tree; the binary is the one the suite tests."""
    p = run(["make", "-s", "-C", REPO, "-o", "build/ckptd", "BUILD=build"] + list(args))
    if p.returncode != 0:
        raise AssertionError("make %s failed:\n%s%s" % (" ".join(args), p.stdout, p.stderr))
    return p


def version():
    with open(os.path.join(REPO, "VERSION")) as f:
        return f.read().strip()


def help_text():
    p = run([ckptd.binary(), "--help"])
    assert p.returncode == 0, p.stderr
    return p.stdout


def help_commands_and_flags(text):
    """The commands and flags `ckptd --help` defines (not those it mentions)."""
    commands, flags, section = set(), set(), None
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):
            section = line[:-1]
            continue
        if section == "commands":
            m = re.match(r"^  ([a-z][a-z-]*)\s{2,}", line)
            if m:
                commands.add(m.group(1))
        elif section == "options":
            m = re.match(r"^  ((?:-[A-Za-z], )?--[a-z0-9-]+)", line)
            if m:
                flags.update(re.findall(r"--?[A-Za-z0-9][a-z0-9-]*", m.group(1)))
    return commands, flags


def man_commands_and_flags(src):
    """The commands (.TP items of COMMANDS) and flags (.TP items of OPTIONS) of
    the man page."""
    commands, flags, section = set(), set(), None
    lines = src.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\.SH\s+(.*)$", line)
        if m:
            section = m.group(1).strip('"')
            continue
        if line.startswith(".TP") and i + 1 < len(lines):
            tag = lines[i + 1].replace("\\-", "-")
            if section == "COMMANDS":
                commands.update(re.findall(r"^\.B\s+([a-z][a-z-]*)$", tag))
            elif section == "OPTIONS":
                flags.update(re.findall(r"(?<![A-Za-z0-9-])--?[A-Za-z0-9][a-z0-9-]*", tag))
    return commands, flags


class Install(unittest.TestCase):
    def test_1_make_install_puts_each_file_in_its_place_under_destdir(self):
        dest = ckptd.work_dir()
        make("install", "DESTDIR=" + dest, "PREFIX=/usr/local")
        files = {
            "usr/local/bin/ckptd": 0o755,
            "usr/local/share/man/man1/ckptd.1": 0o644,
            "usr/local/lib/systemd/system/ckptd.service": 0o644,
            "etc/default/ckptd": 0o644,
        }
        found = sorted(os.path.relpath(os.path.join(d, f), dest)
                       for d, _, fs in os.walk(dest) for f in fs)
        self.assertEqual(found, sorted(files))
        for rel, mode in files.items():
            self.assertEqual(os.stat(os.path.join(dest, rel)).st_mode & 0o777, mode, rel)
        with open(os.path.join(REPO, "build", "ckptd"), "rb") as a, \
                open(os.path.join(dest, "usr/local/bin/ckptd"), "rb") as b:
            self.assertTrue(a.read() == b.read(), "the installed binary is not build/ckptd")
        with open(os.path.join(dest, "usr/local/lib/systemd/system/ckptd.service")) as f:
            unit = f.read()
        self.assertIsNone(re.search(r"@[A-Z]+@", unit), "a placeholder is left in the unit")
        self.assertIn("\nExecStart=/usr/local/bin/ckptd serve $CKPTD_ARGS\n", unit)
        self.assertIn("\nEnvironmentFile=-/etc/default/ckptd\n", unit)
        p = run([os.path.join(dest, "usr/local/bin/ckptd"), "--version"])
        self.assertEqual(p.stdout.strip(), "ckptd " + version())

    def test_2_a_second_install_keeps_the_changed_environment_file_and_uninstall_removes_the_rest(self):
        dest = ckptd.work_dir()
        make("install", "DESTDIR=" + dest)
        env = os.path.join(dest, "etc/default/ckptd")
        with open(env, "a") as f:
            f.write("CKPTD_ARGS=--auth-read\n")
        p = make("install", "DESTDIR=" + dest)
        self.assertIn("keeping", p.stdout)
        with open(env) as f:
            self.assertIn("CKPTD_ARGS=--auth-read", f.read())
        make("uninstall", "DESTDIR=" + dest)
        left = sorted(os.path.relpath(os.path.join(d, f), dest) for d, _, fs in os.walk(dest) for f in fs)
        self.assertEqual(left, ["etc/default/ckptd"])


class Unit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Installed at a real prefix (no DESTDIR), so that verify finds the
        # ExecStart binary and the man page the unit names.
        cls.prefix = os.path.join(ckptd.work_dir(), "usr")
        cls.etc = os.path.join(os.path.dirname(cls.prefix), "etc")
        make("install", "PREFIX=" + cls.prefix, "SYSCONFDIR=" + cls.etc)
        cls.unit = os.path.join(cls.prefix, "lib/systemd/system/ckptd.service")
        cls.env = dict(os.environ, MANPATH=os.path.join(cls.prefix, "share/man"), SYSTEMD_PAGER="",
                       SYSTEMD_COLORS="0")

    def test_1_systemd_analyze_verify_accepts_the_installed_unit(self):
        need("systemd-analyze", "systemd")
        p = run(["systemd-analyze", "verify", self.unit], env=self.env)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""))

    def test_2_systemd_analyze_verify_fails_on_a_broken_copy(self):
        broken = os.path.join(os.path.dirname(self.unit), "broken.service")
        with open(self.unit) as f:
            text = f.read()
        with open(broken, "w") as f:
            f.write(text.replace("ExecStart=" + self.prefix, "ExecStart=" + self.prefix + "/nowhere"))
        try:
            p = run(["systemd-analyze", "verify", broken], env=self.env)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("nowhere", p.stderr)
        finally:
            os.unlink(broken)

    def test_3_the_unit_runs_ckptd_sandboxed(self):
        with open(self.unit) as f:
            lines = set(f.read().splitlines())
        missing = [h for h in HARDENING if h not in lines]
        self.assertEqual(missing, [], "hardening lines missing from the unit")
        p = run(["systemd-analyze", "security", "--offline=true", "--no-pager", self.unit],
                env=self.env)
        m = re.search(r"Overall exposure level for ckptd.service: ([0-9.]+) (\w+)", p.stdout + p.stderr)
        self.assertIsNotNone(m, p.stdout[-500:] + p.stderr[-500:])
        self.assertLess(float(m.group(1)), 2.0, "exposure %s %s" % (m.group(1), m.group(2)))


class ManPage(unittest.TestCase):
    def test_1_the_man_page_renders_without_warnings(self):
        need("groff", "groff-base")
        need("man", "man-db")
        p = run(["groff", "-man", "-ww", "-z", MAN])
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        p = run(["man", "--warnings", "-l", MAN], env=dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING=""))
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "ENVIRONMENT", "FILES",
                        "EXIT STATUS", "EXAMPLES"):
            self.assertIn("\n" + heading + "\n", p.stdout)

    def test_2_groff_warns_on_a_broken_page(self):
        broken = os.path.join(ckptd.work_dir(), "broken.1")
        with open(MAN) as f:
            text = f.read()
        with open(broken, "w") as f:
            f.write(text.replace(".SH NAME", ".SH NAME\n.nosuchmacro x", 1))
        p = run(["groff", "-man", "-ww", "-z", broken])
        self.assertNotEqual(p.stderr, "")

    def test_3_the_man_page_names_every_command_and_flag_of_help_and_no_other(self):
        h_cmds, h_flags = help_commands_and_flags(help_text())
        with open(MAN) as f:
            m_cmds, m_flags = man_commands_and_flags(f.read())
        self.assertGreaterEqual(len(h_cmds), 4)
        self.assertGreaterEqual(len(h_flags), 15)
        self.assertEqual(sorted(m_cmds), sorted(h_cmds), "commands: docs/ckptd.1 vs ckptd --help")
        self.assertEqual(sorted(m_flags), sorted(h_flags), "flags: docs/ckptd.1 vs ckptd --help")

    def test_4_the_man_page_has_this_version(self):
        with open(MAN) as f:
            th = [line for line in f if line.startswith(".TH ")]
        self.assertEqual(len(th), 1)
        self.assertIn('"ckptd %s"' % version(), th[0])

    def test_5_man_finds_the_installed_page(self):
        dest = ckptd.work_dir()
        make("install", "DESTDIR=" + dest)
        p = run(["man", "-M", os.path.join(dest, "usr/local/share/man"), "-P", "cat", "ckptd"],
                env=dict(os.environ, MANWIDTH="80"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("checkpoint store for deep-learning training", p.stdout)


class Metrics(unittest.TestCase):
    def test_1_promtool_accepts_a_real_metrics_answer(self):
        need("promtool", "prometheus")
        with ckptd.Daemon(name="install-metrics") as d:
            j = d.upload_ok("prom", os.path.join(TORCH, "general_checkpoint.pt"), {"epoch": "1", "loss": "0.5"})
            d.upload_ok("prom", os.path.join(TORCH, "cnn_state_dict.pt"))
            self.assertEqual(d.get("/models/prom/checkpoints/%d/file" % j["id"]).status, 200)
            self.assertEqual(d.get("/models/prom/checkpoints/999").status, 404)
            self.assertEqual(d.upload("prom", b"not a checkpoint").status, 415)
            self.assertEqual(d.get("/stats").status, 200)
            for path in ("/!/metrics", "/metrics"):
                r = d.get(path)
                self.assertEqual(r.status, 200)
                text = r.body.decode()
                for name in ("ckptd_requests_total", "ckptd_upload_seconds_bucket", "ckptd_store_blobs"):
                    self.assertIn(name, text)
                p = run(["promtool", "check", "metrics"], input=text)
                self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""), "promtool on %s" % path)

    def test_2_promtool_refuses_broken_metrics(self):
        need("promtool", "prometheus")
        bad = "# TYPE ckptd_requests counter\nckptd_requests{route=\"x\"} 1\n"
        p = run(["promtool", "check", "metrics"], input=bad)
        self.assertNotEqual(p.returncode, 0, p.stdout + p.stderr)


if __name__ == "__main__":
    harness.main()
