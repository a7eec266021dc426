#!/usr/bin/env python3
"""A li3_gearman-style client written against python3-gearman: submits the original's JSON
envelope to its single function and prints the result (or FAILED and the state).

usage: li3_gearman_client.py HOST:PORT TASK [ARG...]
"""
import json
import sys
import uuid

import python3_gearman

FUNCTION = "li3_gearman\\extensions\\command\\Gearmand::run"


def main():
    server, task, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    # What li3_gearman's Gearman::run() json_encode()d: the task gets a leading backslash.
    envelope = {
        "id": uuid.uuid4().hex,
        "args": args,
        "env": "production",
        "configName": "default",
        "task": "\\" + task,
        "background": False,
        "retry": 0,
        "retries": 0,
    }
    client = python3_gearman.GearmanClient([server])
    request = client.submit_job(FUNCTION, json.dumps(envelope), poll_timeout=20)
    if request.state != python3_gearman.JOB_COMPLETE:
        print("FAILED", request.state)
        sys.exit(1)
    result = request.result
    print(result.decode() if isinstance(result, bytes) else result)


if __name__ == "__main__":
    main()
