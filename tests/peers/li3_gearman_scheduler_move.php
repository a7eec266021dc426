<?php
// li3_gearman's scheduler move, as its `li3 gearmand scheduler` did it (phpredis + the gearman
// extension): per job WATCH, ZRANGEBYSCORE ... LIMIT 0 1, MULTI/ZREM/EXEC, then doBackground.
// Used by tests/benches/scheduler.rs as the peer. Prints "<moved> <seconds>".
// Usage: php li3_gearman_scheduler_move.php REDIS_PORT GEARMAN_PORT KEY
[$_, $redisPort, $gearmanPort, $key] = $argv;
$redis = new Redis();
$redis->connect('127.0.0.1', (int) $redisPort);
$client = new GearmanClient();
$client->addServer('127.0.0.1', (int) $gearmanPort);
$moved = 0;
$start = microtime(true);
while (true) {
    $redis->watch($key);
    $due = $redis->zRangeByScore($key, '-inf', (string) time(), ['limit' => [0, 1]]);
    if (!$due) {
        $redis->unwatch();
        break;
    }
    $member = $due[0];
    $done = $redis->multi()->zRem($key, $member)->exec();
    if ($done === false) {
        continue; // another scheduler touched the set
    }
    $job = json_decode($member, true);
    $client->doBackground('Bench::noop', json_encode($job['workload']), $job['id']);
    if ($client->returnCode() != GEARMAN_SUCCESS) {
        fwrite(STDERR, "submission failed: " . $client->error() . "\n");
        exit(1);
    }
    $moved++;
}
printf("%d %.6f\n", $moved, microtime(true) - $start);
