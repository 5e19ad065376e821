"""The distro packages (packaging/, issue 15), built once by `tools/ccdocker-dev package` into
build/packages (nothing is rebuilt when the tree is unchanged) and checked as a packager would, without
installing them on this machine: lintian has nothing to say that is not overridden with a reason; the
RPMs carry the same files as the .debs, package by package; the configuration file is a conffile in
both and lists every key the daemon knows, commented out; the units, bus policy, polkit actions,
sysusers.d and tmpfiles.d entries and man pages are where systemd, dbus, polkit and man look for them;
the scriptlets make the httpd user before its state directory; `ccdockerctl --help` names no command
that its man page lacks; and the bash completion offers commands, options and the IDs of live sessions
from `ccdockerctl list`."""

import gzip
import os
import re
import shutil
import tempfile
import unittest

import sandbox as sb

PACKAGES = os.path.join(sb.SRC, "build", "packages")
VERSION = re.search(r"version : '([^']+)'", open(os.path.join(sb.SRC, "meson.build")).read()).group(1)
NAMES = ("ccdockerd", "ccdockerctl", "ccdocker-httpd", "cc-docker-image")


def deb(name):
    return os.path.join(PACKAGES, f"{name}_{VERSION}-1_amd64.deb")


def rpm(name):
    return os.path.join(PACKAGES, f"{name}-{VERSION}-1.x86_64.rpm")


def normalise(path):
    """One spelling for both formats: /lib is /usr/lib (Debian 12's units are in /lib, merged /usr), and
    documentation and man pages are the same compressed or not (dh_compress compresses them, Debian's
    rpm does not)."""
    path = path.lstrip(".")
    path = "/usr" + path if path.startswith("/lib/") else path
    return re.sub(r"^(/usr/share/(doc|man)/.*)\.gz$", r"\1", path)


def deb_files(name):
    out = sb.run("dpkg-deb", "--contents", deb(name)).stdout
    files = set()
    for line in out.splitlines():
        mode, path = line.split()[0], line.split()[5]
        if mode.startswith("d"):
            continue
        # What Debian adds of its own: copyright, changelog and lintian overrides.
        if re.match(rf"\./usr/share/(doc/{re.escape(name)}/(copyright|changelog\.Debian\.gz)|lintian/overrides/)",
                    path):
            continue
        files.add(normalise(path))
    return files


def rpm_files(name):
    out = sb.run("rpm", "-qlp", "--nosignature", rpm(name)).stdout
    dirs = set(sb.run("rpm", "-qp", "--nosignature", "--qf", "[%{FILENAMES} %{FILEMODES:perms}\n]",
                      rpm(name)).stdout.split("\n"))
    dirs = {d.split()[0] for d in dirs if d.strip() and d.split()[1].startswith("d")}
    # What RPM adds of its own: %license under /usr/share/licenses, the build-id links of the binaries.
    return {normalise(p) for p in out.split()
            if p not in dirs and not p.startswith(("/usr/share/licenses/", "/usr/lib/.build-id/"))}


def config_keys():
    with open(os.path.join(sb.SRC, "daemon", "config.c")) as f:
        table = re.search(r"config_keys\[\] = \{(.*?)\n\};", f.read(), re.S).group(1)
    return re.findall(r'\{\s*"([A-Za-z]+)",', table)


class PackagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        p = sb.run(os.path.join(sb.SRC, "tools", "ccdocker-dev"), "package", check=False, timeout=1800)
        print(f"\n  {p.stdout.strip()}", end=" ", flush=True)
        if p.returncode != 0:
            raise AssertionError(f"tools/ccdocker-dev package failed:\n{p.stderr[-4000:]}")
        cls.tmp = tempfile.mkdtemp(prefix="ccdocker-packages-")
        cls.root = os.path.join(cls.tmp, "root")
        for name in NAMES:
            sb.run("dpkg-deb", "-x", deb(name), cls.root)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_every_package_is_built_under_the_names_help_gives(self):
        for name in NAMES:
            with self.subTest(package=name):
                self.assertTrue(os.path.isfile(deb(name)), deb(name))
                self.assertTrue(os.path.isfile(rpm(name)), rpm(name))
        self.assertTrue(os.path.isfile(os.path.join(PACKAGES, f"cc-docker-{VERSION}.tar.gz")))

    def test_lintian_has_no_error_and_no_warning_left(self):
        # Warnings are either fixed or overridden with a reason (packaging/debian/README).
        with open(os.path.join(PACKAGES, "lintian.txt")) as f:
            report = f.read()
        self.assertEqual([l for l in report.splitlines() if re.match(r"[EW]: ", l)], [], report)

    def test_rpms_carry_the_files_of_the_debs(self):
        for name in NAMES:
            with self.subTest(package=name):
                d, r = deb_files(name), rpm_files(name)
                self.assertEqual((sorted(d - r), sorted(r - d)), ([], []), "only in the .deb / only in the .rpm")
                self.assertTrue(d)

    def test_files_are_where_systemd_dbus_polkit_and_man_look(self):
        expect = {
            "ccdockerd": {"/usr/libexec/ccdockerd", "/usr/lib/systemd/system/ccdockerd.service",
                          "/usr/share/dbus-1/system.d/org.ccdocker1.conf",
                          "/usr/share/dbus-1/system-services/org.ccdocker1.service",
                          "/usr/share/polkit-1/actions/org.ccdocker1.policy", "/usr/lib/tmpfiles.d/ccdockerd.conf",
                          "/etc/ccdocker/ccdockerd.conf", "/usr/share/man/man8/ccdockerd.8",
                          "/usr/share/man/man5/ccdockerd.conf.5", "/usr/share/doc/cc-docker/install.md"},
            "ccdockerctl": {"/usr/bin/ccdockerctl", "/usr/share/man/man1/ccdockerctl.1",
                            "/usr/share/bash-completion/completions/ccdockerctl"},
            "ccdocker-httpd": {"/usr/libexec/ccdocker-httpd", "/usr/lib/systemd/system/ccdocker-httpd.service",
                               "/usr/lib/systemd/system/ccdocker-httpd.socket",
                               "/usr/lib/sysusers.d/ccdocker-httpd.conf", "/usr/lib/tmpfiles.d/ccdocker-httpd.conf",
                               "/usr/share/man/man8/ccdocker-httpd.8"},
            "cc-docker-image": {"/usr/sbin/ccdocker-build-image", "/usr/lib/cc-docker/image/bin/ccdocker-init",
                                "/usr/lib/cc-docker/image/bin/ccdocker-mcp", "/usr/share/cc-docker/image/Containerfile",
                                "/usr/share/man/man8/ccdocker-build-image.8"},
        }
        for name, files in expect.items():
            with self.subTest(package=name):
                self.assertEqual(files - deb_files(name), set())

    def test_depends_name_the_libraries_and_the_runtime(self):
        depends = sb.run("dpkg-deb", "--field", deb("ccdockerd"), "Depends").stdout
        for need in ("libsystemd0", "libcurl4", "libsqlite3-0", "podman", "polkitd", "dbus-system-bus", "systemd"):
            self.assertIn(need, depends)
        requires = sb.run("rpm", "-qpR", "--nosignature", rpm("ccdockerd")).stdout
        for need in ("podman", "polkit", "dbus", "libsystemd.so.0()(64bit)"):
            self.assertIn(need, requires)

    def test_the_configuration_is_a_conffile_listing_every_key_commented(self):
        conffiles = sb.run("sh", "-c", f"dpkg-deb --ctrl-tarfile {deb('ccdockerd')} | tar -xO ./conffiles").stdout
        self.assertEqual(conffiles.split(), ["/etc/ccdocker/ccdockerd.conf"])
        self.assertEqual(sb.run("rpm", "-qcp", "--nosignature", rpm("ccdockerd")).stdout.split(),
                         ["/etc/ccdocker/ccdockerd.conf"])
        with open(os.path.join(self.root, "etc/ccdocker/ccdockerd.conf")) as f:
            text = f.read()
        listed = re.findall(r"^#([A-Za-z]+)=", text, re.M)  # in the documentation's order
        self.assertEqual((sorted(listed), len(listed)), (sorted(config_keys()), len(set(listed))))
        # Nothing is set: the file as shipped changes no default.
        self.assertEqual([l for l in text.splitlines() if l.strip() and not l.startswith("#")], ["[ccdockerd]"])

    def test_scriptlets_make_the_httpd_user_before_its_state_directory(self):
        postinst = sb.run("sh", "-c", f"dpkg-deb --ctrl-tarfile {deb('ccdocker-httpd')} | tar -xO ./postinst").stdout
        self.assertLess(postinst.index("systemd-sysusers"), postinst.index("systemd-tmpfiles"))
        scripts = sb.run("rpm", "-qp", "--scripts", "--nosignature", rpm("ccdocker-httpd")).stdout
        self.assertLess(scripts.index("systemd-sysusers"), scripts.index("systemd-tmpfiles"))
        for step in ("preset ccdocker-httpd.socket", "disable --now ccdocker-httpd.socket", "try-restart"):
            self.assertIn(step, scripts)

    def test_help_names_no_command_the_man_page_lacks(self):
        # Read from the page's roff, without its font changes, escaped hyphens and break points, so that
        # rendering (hyphenation, line breaks) cannot hide or split a word.
        with gzip.open(os.path.join(self.root, "usr/share/man/man1/ccdockerctl.1.gz"), "rt") as f:
            roff = re.sub(r"\\f(\[\w*\]|[BIRPV])|\\:", "", f.read()).replace("\\-", "-")
        sections = set(re.findall(r"^\.SS (\w+)", roff, re.M))  # the subsections: one per command
        ctl = os.path.join(sb.env("CCDOCKER_BUILD_DIR"), "ctl", "ccdockerctl")
        help_text = sb.run(ctl, "--help").stdout
        commands = re.findall(r"^  ([a-z]+)\b", help_text.split("Commands:")[1].split("\n\n")[0], re.M)
        self.assertGreater(len(commands), 10)
        self.assertEqual([c for c in commands if c not in sections], [], "commands of --help missing in ccdockerctl(1)")
        options = set(re.findall(r"--[a-z][a-z-]*", help_text))
        self.assertEqual(sorted(o for o in options if o not in roff), [], "options of --help missing in ccdockerctl(1)")

    def test_the_image_recipe_pins_the_sandbox_claude_code(self):
        script = open(os.path.join(self.root, "usr/sbin/ccdocker-build-image")).read()
        self.assertIn(f"CLAUDE_CODE_VERSION={os.environ['CCDOCKER_CLAUDE_CODE_VERSION']}\n", script)
        self.assertEqual(sb.run("sh", "-n", os.path.join(self.root, "usr/sbin/ccdocker-build-image")).returncode, 0)

    def complete(self, *words):
        """What the shipped completion offers for the command line WORDS (the last being completed)."""
        script = os.path.join(self.root, "usr/share/bash-completion/completions/ccdockerctl")
        line = " ".join(words)
        code = (f"source /usr/share/bash-completion/bash_completion; source {script}; "
                f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({line}"
                f"{' ' + chr(39) * 2 if words[-1] == '' else ''}); COMP_CWORD={len(words) - 1}; "
                "_ccdockerctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
        return sb.run("bash", "-c", code).stdout.split()

    def test_completion_offers_commands_options_and_session_ids(self):
        self.assertEqual(sorted(self.complete("ccdockerctl", "st")), ["status", "stop"])
        self.assertIn("--memory", self.complete("ccdockerctl", "create", "--me"))
        self.assertEqual(self.complete("ccdockerctl", "stop", "x", "--f"), ["--force"])
        daemon = sb.Daemon(unit="ccdockerd-packages-test.service")
        shutil.rmtree(daemon.state_dir, ignore_errors=True)  # a store of its own: this session alone
        self.addCleanup(shutil.rmtree, daemon.state_dir, ignore_errors=True)
        daemon.start()
        self.addCleanup(daemon.stop)
        sid, path = sb.create_session()
        self.addCleanup(sb.busctl, "call", "org.ccdocker1", path, "org.ccdocker1.Session", "Stop", "b", "true",
                        check=False)
        self.assertEqual(self.complete("ccdockerctl", "--user", "status", ""), [sid])
        self.assertEqual(self.complete("ccdockerctl", "--user", "stop", sid[:3]), [sid])
        self.assertEqual(self.complete("ccdockerctl", "--user", "status", sid, ""), [])

if __name__ == "__main__":
    unittest.main()
