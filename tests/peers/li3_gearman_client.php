<?php
/**
 * A PHP application triggering a job the way li3_gearman's Job::run did (later versions),
 * through the gearman extension: json_encode() of {id, args, env, configName, task, background,
 * retry, retries} to the single function li3_gearman\extensions\command\Gearmand::run.
 *
 * usage: php li3_gearman_client.php HOST:PORT ACTION TASK [ARG...]
 *   ACTION: doNormal, doHigh, doLow, doBackground, doHighBackground, doLowBackground
 *   env LITHIUM_ENVIRONMENT: the environment name (default "production")
 *   env LI3G_RETRIES: the `retries` value as JSON (default [], as the original sends when unset)
 *   HTTP_HOST, HTTPS in the environment end up in $_SERVER, as under a web server; the CLI sets
 *   SCRIPT_FILENAME, SCRIPT_NAME and PHP_SELF itself.
 * Prints the result (doNormal/doHigh/doLow) or the job handle (background), and exits 1 with
 * the return code when the extension reports a failure.
 */

list(, $server, $action, $task) = $argv;
$args = array_slice($argv, 4);

// Job::run: the request's server variables, plus the lithium environment.
$env = array_intersect_key($_SERVER, array(
    'HTTP_HOST' => null,
    'SCRIPT_FILENAME' => null,
    'SCRIPT_NAME' => null,
    'PHP_SELF' => null,
    'HTTPS' => null,
));
$env['environment'] = getenv('LITHIUM_ENVIRONMENT') ?: 'production';

if ($task[0] !== '\\') {
    $task = '\\' . $task;
}
if (strpos($task, '::') === false) {
    $task .= '::run';
}

$id = sha1(uniqid(time(), true));
$configName = 'default';
$background = strpos($action, 'Background') !== false;
$retry = 0;
$retries = getenv('LI3G_RETRIES') !== false ? json_decode(getenv('LI3G_RETRIES'), true) : array();
$workload = json_encode(compact('id', 'args', 'env', 'configName', 'task', 'background', 'retry', 'retries'));

$client = new GearmanClient();
list($host, $port) = explode(':', $server);
$client->addServer($host, (int) $port);
$client->setTimeout(30000);

$result = $client->{$action}('li3_gearman\\extensions\\command\\Gearmand::run', $workload);
if ($client->returnCode() !== GEARMAN_SUCCESS) {
    fwrite(STDERR, "FAILED " . $client->returnCode() . " " . $client->error() . "\n");
    exit(1);
}
echo $result, "\n";
