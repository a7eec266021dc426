#!/usr/bin/env python3
"""A li3_gearman-style client written against python3-gearman: submits the original's JSON
envelope, as PHP's json_encode writes it, to its single function and prints the result (or the
job handle for a background job; FAILED and the state on failure).

usage: li3_gearman_client.py HOST:PORT TASK [ARG...]
  env LI3G_ACTION: normal (default), high, low, background, high_background, low_background
  env LITHIUM_ENVIRONMENT: the environment name (default "production")
  env LI3G_RETRIES: the `retries` value as JSON (default [], what the original sends when unset)
  env HTTP_HOST, HTTPS: sent in `env` when set, as a web request's $_SERVER had them
"""
import json
import os
import sys
import uuid

import python3_gearman

FUNCTION = "li3_gearman\\extensions\\command\\Gearmand::run"
PRIORITIES = {"": None, "high": python3_gearman.PRIORITY_HIGH, "low": python3_gearman.PRIORITY_LOW}


def main():
    server, task, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    action = os.environ.get("LI3G_ACTION", "normal")
    background = action.endswith("background")
    priority = PRIORITIES[action.replace("background", "").replace("normal", "").strip("_")]
    # Job::run's env: the request's server variables where set, plus the lithium environment.
    env = {k: os.environ[k] for k in ("HTTP_HOST", "HTTPS") if k in os.environ}
    script = os.path.abspath(__file__)
    env.update({"SCRIPT_FILENAME": script, "SCRIPT_NAME": script, "PHP_SELF": script})
    env["environment"] = os.environ.get("LITHIUM_ENVIRONMENT", "production")
    # The task gets a leading backslash, and ::run when it names no method.
    task = task if task.startswith("\\") else "\\" + task
    task = task if "::" in task else task + "::run"
    envelope = {
        "id": uuid.uuid4().hex + "00000000",
        "args": args,
        "env": env,
        "configName": "default",
        "task": task,
        "background": background,
        "retry": 0,
        "retries": json.loads(os.environ.get("LI3G_RETRIES", "[]")),
    }
    # PHP's json_encode escapes "/" as "\/".
    workload = json.dumps(envelope, separators=(",", ":")).replace("/", "\\/")
    client = python3_gearman.GearmanClient([server])
    request = client.submit_job(
        FUNCTION, workload, background=background, priority=priority, wait_until_complete=not background,
        poll_timeout=20,
    )
    if background:
        print(request.job.handle.decode() if isinstance(request.job.handle, bytes) else request.job.handle)
        return
    if request.state != python3_gearman.JOB_COMPLETE:
        print("FAILED", request.state)
        sys.exit(1)
    result = request.result
    print(result.decode() if isinstance(result, bytes) else result)


if __name__ == "__main__":
    main()
