"""Hazards a hostile review found, each in every mode: running out of
descriptors, a handler that fails after its response started, a dead
supervisor."""

import os
import resource
import signal
import threading
import time

import harness


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class HardeningTest(harness.TestCase):
    def test_accepting_resumes_once_descriptors_are_free(self):
        fc = self.fcgate("bench", workers=1)
        worker = fc.wait_workers(1)[0]
        time.sleep(0.5)  # booted: its descriptors are all open
        soft, hard = resource.prlimit(worker, resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/%d/fd" % worker))
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (used, hard))
        self.addCleanup(lambda: harness.pid_alive(worker) and
                        resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard)))
        out = []
        req = threading.Thread(target=lambda: out.append(
            harness.fcgi_request(fc.listen, "GET", "/hello", timeout=20)), daemon=True)
        req.start()
        self.assertIsNotNone(fc.wait_log(r"accept: Too many open files; pausing", 5),
                             "the worker never ran out of descriptors")
        cpu0 = cpu_seconds(worker)
        time.sleep(2)
        self.assertLess(cpu_seconds(worker) - cpu0, 1.0, "the worker spins while out of fds")
        self.assertEqual(out, [], "answered without a descriptor?")
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (soft, hard))
        t0 = time.monotonic()
        req.join(10)
        self.assertTrue(out, "the worker never accepted again once descriptors were free")
        self.assertEqual(out[0].http()[2], b"hello\n")
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(fc.worker_pids(), [worker])


if __name__ == "__main__":
    harness.main()
