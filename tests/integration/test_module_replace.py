# SPDX-License-Identifier: BSD-2-Clause
"""Replacing the module file in place (`cp new.so app.so`: the same inode,
truncated and rewritten) while workers serve: they keep the code they
loaded, and a reload picks up the new file."""

import os
import shutil
import signal
import subprocess

import harness
from harness import app_path


class ModuleReplaceTest(harness.TestCase):
    def test_cp_over_loaded_module_under_load_crashes_no_worker(self):
        module = os.path.join(self.tmp, "app.so")
        shutil.copyfile(app_path("bench"), module)
        inode = os.stat(module).st_ino
        fc = self.fcgate("bench", app={"module": module, "database": ""})
        ng = self.nginx(fc)
        workers = fc.wait_workers(fc.workers)
        with harness.Load(ng.port) as load:
            self.assertTrue(load.wait_requests(50), load.summary())
            for name in ("probe", "bench", "probe"):
                subprocess.run(["cp", app_path(name), module], check=True)
                self.assertEqual(os.stat(module).st_ino, inode, "cp must write in place")
                self.assertTrue(load.wait_requests(100), load.summary())
        self.assertEqual(load.failed(), 0, load.summary())
        self.assertEqual(sorted(fc.worker_pids()), sorted(workers), fc.log())
        self.assertNotRegex(fc.log(), "killed by|while serving|respawning")
        # The running workers still have bench: /pid is probe's alone.
        self.assertEqual(harness.fcgi_request(fc.listen, "GET", "/pid").http()[0], 404)
        fc.proc.send_signal(signal.SIGHUP)
        self.assertTrue(fc.wait_workers(fc.workers, 10.0, exclude=workers), fc.log())
        served = harness.wait_until(
            lambda: harness.fcgi_request(fc.listen, "GET", "/pid").http()[0] == 200, 10.0)
        self.assertTrue(served, "HUP did not load the new module:\n" + fc.log())


if __name__ == "__main__":
    harness.main()
