<?php
/**
 * A PHP worker serving jobs the way li3_gearman's `li3 gearmand` worker did: it registers the
 * single function li3_gearman\extensions\command\Gearmand::run and, per job, decodes the
 * envelope as Gearmand::_work did (json_decode; configName, task, args, env) and runs the task
 * as Job::execute did (is_callable, `environment` taken out of env, the rest merged into
 * $_SERVER, call_user_func_array). Tasks are the PHP classes below, as an application's
 * app\tasks classes.
 *
 * One difference, on purpose: a task that throws (or a bad envelope) fails the job with its
 * message (WORK_WARNING, then WORK_FAIL); the 2015 original logged it and answered success
 * with no result, so a client could not tell.
 *
 * usage: php li3_gearman_worker.php HOST:PORT
 */

namespace app\tasks {
    class Report {
        /** A task with arguments and the job's environment, as tasks read it. */
        public static function build($rows) {
            return "report of {$rows} rows in {$GLOBALS['environment']} for " . $_SERVER['HTTP_HOST'];
        }

        /** Writes $text to $path: shows that a background job ran. */
        public static function write($path, $text) {
            file_put_contents($path, $text . ' in ' . $GLOBALS['environment']);
            return 'written';
        }

        public static function fail($why) {
            throw new \RuntimeException($why);
        }
    }
}

namespace {
    list(, $server) = $argv;
    $GLOBALS['environment'] = null;
    $_SERVER['HTTP_HOST'] = 'unset';

    function execute($task, array $args = array(), array $env = array()) {
        if (!is_callable($task)) {
            throw new RuntimeException("Invalid task {$task}");
        }
        if (array_key_exists('environment', $env)) {
            $GLOBALS['environment'] = $env['environment'];
            unset($env['environment']);
        }
        if (!empty($env)) {
            $_SERVER = $env + $_SERVER;
        }
        return call_user_func_array($task, $args);
    }

    $worker = new GearmanWorker();
    list($host, $port) = explode(':', $server);
    $worker->addServer($host, (int) $port);
    $worker->addFunction('li3_gearman\\extensions\\command\\Gearmand::run', function (GearmanJob $job) {
        try {
            $workload = $job->workload();
            if (empty($workload)) {
                throw new RuntimeException("No workload");
            }
            $params = @json_decode($workload, true);
            if (!$params || !is_array($params)) {
                throw new RuntimeException("Invalid workload: {$workload}");
            }
            foreach (array('configName', 'task', 'args') as $key) {
                if (!array_key_exists($key, $params)) {
                    throw new RuntimeException("Invalid workload: no {$key}");
                }
            }
            return execute($params['task'], $params['args'], !empty($params['env']) ? $params['env'] : array());
        } catch (Exception $e) {
            $job->sendWarning($e->getMessage());
            $job->sendFail();
            return null;
        }
    });
    while ($worker->work()) {
    }
}
