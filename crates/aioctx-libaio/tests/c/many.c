/* SPEC §3: a context costs no descriptor and no thread of its own. Under the usual soft
   limit of 1024 open files, 10,000 live contexts are made with io_setup, each one used (a
   read submitted and reaped, without sleeping in io_getevents), then all destroyed: no
   io_setup or io_submit fails (EMFILE was the io_uring engine's answer past ~1,018 when
   each context had a ring of its own), and the open descriptors stay where they were. */
#include "check.h"
#include <dirent.h>
#include <sys/resource.h>

#define CONTEXTS 10000
/* What the engine may open for the whole process (shared rings, kernel AIO contexts). */
#define PROCESS_WIDE_FDS 8

static int open_fds(void)
{
	DIR *dir = opendir("/proc/self/fd");
	CHECK(dir != NULL);
	int count = 0;
	while (readdir(dir) != NULL)
		count++;
	closedir(dir);
	return count;
}

static void use(io_context_t ctx, int fd, char *buf)
{
	struct iocb cb, *cbs[1] = {&cb};
	io_prep_pread(&cb, fd, buf, 4, 0);
	cb.data = (void *)0x77;
	CHECK_RET(io_submit(ctx, 1, cbs), 1);
	struct io_event event;
	struct timespec zero = {0, 0};
	for (int tries = 0;; tries++) {
		CHECK(tries < 1000000);
		int got = io_getevents(ctx, 0, 1, &event, &zero);
		CHECK(got >= 0);
		if (got == 1)
			break;
		sched_yield();
	}
	CHECK(event.data == (void *)0x77 && event.res == 4);
	CHECK(memcmp(buf, "\x7f" "ELF", 4) == 0);
}

int main(void)
{
	report_library();
	struct rlimit limit;
	CHECK(getrlimit(RLIMIT_NOFILE, &limit) == 0);
	limit.rlim_cur = limit.rlim_max < 1024 ? limit.rlim_max : 1024;
	CHECK(setrlimit(RLIMIT_NOFILE, &limit) == 0);
	int fd = open("/proc/self/exe", O_RDONLY);
	CHECK(fd >= 0);
	char buf[4];
	io_context_t *contexts = calloc(CONTEXTS, sizeof(*contexts));
	CHECK(contexts != NULL);

	/* The engine's process-wide parts (one ring per CPU, dealt in turn) come with the
	   first contexts. */
	for (int i = 0; i < 8; i++) {
		io_context_t warm_up = 0;
		CHECK_RET(io_setup(4, &warm_up), 0);
		use(warm_up, fd, buf);
		CHECK_RET(io_destroy(warm_up), 0);
	}
	int before = open_fds();

	for (int i = 0; i < CONTEXTS; i++) {
		CHECK_RET(io_setup(4, &contexts[i]), 0);
		use(contexts[i], fd, buf);
	}
	int live = open_fds();
	printf("%d live contexts: %d fds (from %d)\n", CONTEXTS, live, before);
	CHECK(live <= before + PROCESS_WIDE_FDS);
	for (int i = 0; i < CONTEXTS; i++)
		CHECK_RET(io_destroy(contexts[i]), 0);
	CHECK(open_fds() <= before);
	free(contexts);
	close(fd);
	return 0;
}
