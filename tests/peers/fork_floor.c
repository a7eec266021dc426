/* The fork floor: the least any per-job process isolation can cost on this machine.
 *
 * Usage: fork_floor ANON_KIB COUNT
 * Allocates and writes ANON_KIB KiB of anonymous memory (give it the li3g worker's RssAnon, read
 * from /proc, so the kernel copies page tables for a process of the same shape), then COUNT
 * times: fork; the child writes one byte to a pipe and _exits; the parent reads the byte and
 * reaps the child (waitpid). Prints the forks per second on stdout. No Gearman, no job: what is
 * left is fork, a pipe, exit and wait. Build: cc -O2 fork_floor.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s ANON_KIB COUNT\n", argv[0]);
    return 2;
  }
  size_t bytes = (size_t)atol(argv[1]) * 1024;
  long count = atol(argv[2]);
  char *anon = malloc(bytes ? bytes : 1);
  if (anon == NULL) return 1;
  memset(anon, 1, bytes);
  int fds[2];
  if (pipe(fds) != 0) return 1;
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (long i = 0; i < count; i++) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      char byte = 'x';
      _exit(write(fds[1], &byte, 1) == 1 ? 0 : 1);
    }
    char byte;
    if (read(fds[0], &byte, 1) != 1) return 1;
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
  }
  clock_gettime(CLOCK_MONOTONIC, &end);
  double seconds = (double)(end.tv_sec - start.tv_sec) + (double)(end.tv_nsec - start.tv_nsec) / 1e9;
  printf("%.0f\n", (double)count / seconds);
  /* Keep the memory live to the end. */
  return anon[bytes ? bytes - 1 : 0] == 1 ? 0 : 1;
}
