"""Run a command with inherited stdin/stdout and write its CPU seconds and peak RSS (KiB) to a file.

Used as a ProxyCommand wrapper by bench.py: ``rusage.py OUT CMD…``. ssh ends its ProxyCommand with
SIGHUP; the wrapper passes it on to the child and survives to write the figures (the child's own,
not the wrapper's).
"""
import resource
import signal
import subprocess
import sys


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    child = subprocess.Popen(argv)
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    code = child.wait()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "w") as fh:
        fh.write(f"{ru.ru_utime + ru.ru_stime:.3f} {ru.ru_maxrss}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
