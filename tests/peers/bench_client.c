/* The benchmark's client on libgearman.
 *
 * Usage: bench_client HOST PORT FUNCTION WORKLOAD bg N    queue N background jobs, pipelined
 *        bench_client HOST PORT FUNCTION WORKLOAD loop N  queue N background jobs one at a time
 *                                                         (gearman_client_do_background)
 *        bench_client HOST PORT FUNCTION WORKLOAD sync N  N synchronous jobs one at a time;
 *                                                         prints each round trip in us, one a line
 * Build: cc -O2 bench_client.c -lgearman */
#include <libgearman-1.0/gearman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: %s HOST PORT FUNCTION WORKLOAD bg|loop|sync N\n", argv[0]);
    return 2;
  }
  const char *function = argv[3], *workload = argv[4];
  long n = atol(argv[6]);
  gearman_client_st *client = gearman_client_create(NULL);
  if (client == NULL || gearman_client_add_server(client, argv[1], (in_port_t)atoi(argv[2])) != GEARMAN_SUCCESS) {
    fprintf(stderr, "cannot set up the client\n");
    return 1;
  }
  if (strcmp(argv[5], "bg") == 0) {
    const long batch = 1000;
    for (long sent = 0; sent < n; sent += batch) {
      for (long i = sent; i < n && i < sent + batch; i++) {
        gearman_return_t rc;
        gearman_task_st *task =
            gearman_client_add_task_background(client, NULL, NULL, function, NULL, workload, strlen(workload), &rc);
        if (task == NULL || rc != GEARMAN_SUCCESS) {
          fprintf(stderr, "add task: %s\n", gearman_client_error(client));
          return 1;
        }
      }
      if (gearman_client_run_tasks(client) != GEARMAN_SUCCESS) {
        fprintf(stderr, "run tasks: %s\n", gearman_client_error(client));
        return 1;
      }
      gearman_client_task_free_all(client);
    }
  } else if (strcmp(argv[5], "loop") == 0) {
    for (long i = 0; i < n; i++) {
      gearman_job_handle_t handle;
      gearman_return_t rc = gearman_client_do_background(client, function, NULL, workload, strlen(workload), handle);
      if (rc != GEARMAN_SUCCESS) {
        fprintf(stderr, "job: %s\n", gearman_client_error(client));
        return 1;
      }
    }
  } else {
    for (long i = 0; i < n; i++) {
      size_t size;
      gearman_return_t rc;
      double start = now_us();
      void *result = gearman_client_do(client, function, NULL, workload, strlen(workload), &size, &rc);
      double took = now_us() - start;
      if (rc != GEARMAN_SUCCESS) {
        fprintf(stderr, "job: %s\n", gearman_client_error(client));
        return 1;
      }
      free(result);
      printf("%.1f\n", took);
    }
  }
  gearman_client_free(client);
  return 0;
}
