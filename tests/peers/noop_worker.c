/* A no-op Gearman worker on libgearman: the benchmark's reference peer.
 *
 * Usage: noop_worker HOST PORT FUNCTION [COUNT]
 * Registers FUNCTION, answers every job with an empty result (gearman_worker_work), and exits
 * after COUNT jobs (0 or absent: never). Build: cc -O2 noop_worker.c -lgearman */
#include <libgearman-1.0/gearman.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

static gearman_return_t noop(gearman_job_st *job, void *context) {
  (void)job;
  (void)context;
  return GEARMAN_SUCCESS;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: %s HOST PORT FUNCTION [COUNT]\n", argv[0]);
    return 2;
  }
  long count = argc > 4 ? atol(argv[4]) : 0;
  gearman_worker_st *worker = gearman_worker_create(NULL);
  if (worker == NULL) return 1;
  if (gearman_worker_add_server(worker, argv[1], (in_port_t)atoi(argv[2])) != GEARMAN_SUCCESS ||
      gearman_worker_define_function(worker, argv[3], strlen(argv[3]), gearman_function_create(noop), 0, NULL) !=
          GEARMAN_SUCCESS) {
    fprintf(stderr, "%s\n", gearman_worker_error(worker));
    return 1;
  }
  for (long done = 0; count == 0 || done < count; done++) {
    gearman_return_t rc = gearman_worker_work(worker);
    if (rc != GEARMAN_SUCCESS) {
      fprintf(stderr, "%s\n", gearman_worker_error(worker));
      return 1;
    }
  }
  gearman_worker_free(worker);
  return 0;
}
