"""The shipped units are hardened (STYLE.md 13): systemd's own audit of units/ccdockerd.service rates
its exposure low, and the settings the daemon depends on are there."""

import os
import re
import unittest

import sandbox as sb

UNIT = os.path.join(sb.SRC, "units", "ccdockerd.service")


class UnitHardeningTest(unittest.TestCase):
    def test_systemd_analyze_security_rates_ccdockerd_service_low(self):
        # --threshold: fail above 2.0 on systemd's 0-10 exposure scale (the option takes tenths).
        p = sb.run("systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager", UNIT,
                   check=False)
        level = re.search(r"Overall exposure level for ccdockerd.service: ([0-9.]+)", p.stdout)
        self.assertIsNotNone(level, p.stdout[-2000:] + p.stderr)
        self.assertLessEqual(float(level.group(1)), 2.0)
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_unit_runs_the_daemon_on_the_system_bus_and_notifies(self):
        with open(UNIT) as f:
            text = f.read()
        settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        self.assertEqual(settings["Type"], "notify")
        self.assertEqual(settings["BusName"], "org.ccdocker1")
        self.assertIn("--system", settings["ExecStart"])
        self.assertEqual(settings["NoNewPrivileges"], "yes")


if __name__ == "__main__":
    unittest.main()
