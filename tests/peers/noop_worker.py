"""A no-op python3-gearman worker for the benchmark: python3 noop_worker.py HOST:PORT FUNCTION [COUNT]."""
import sys

import python3_gearman

server, function = sys.argv[1], sys.argv[2]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 0
done = 0


class Worker(python3_gearman.GearmanWorker):
    def after_poll(self, any_activity):
        return count == 0 or done < count


def noop(worker, job):
    global done
    done += 1
    return ""


worker = Worker([server])
worker.register_task(function, noop)
worker.work(poll_timeout=1.0)
