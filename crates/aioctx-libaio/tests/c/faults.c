/* Faults from outside, as hostile or careless callers make them (issue 12):
   - the caller closes the fd and opens another file under the same number while O_DIRECT
     writes are in flight: the data lands in the original file only (SPEC §2: the fd is
     resolved at submit); later submits on the number go to the new file;
   - a signal whose handler has no SA_RESTART interrupts a blocked io_getevents: -EINTR,
     and the event still comes afterwards;
   - a process exits with exit() or dies of SIGTERM with contexts live and requests that
     never finish: it ends promptly;
   - a forked child: the parent's context is -EINVAL there, its own works, and the
     parent's in-flight O_DIRECT reads are unaffected;
   - bad handles: random 64-bit values, a destroyed context, a handle from before a fork,
     io_destroy twice: -EINVAL, never a dereference. */
#include "check.h"
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#define BLOCK 4096
#define WRITES 64

static void scratch(char *path)
{
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK(ftruncate(fd, WRITES * BLOCK) == 0);
	close(fd);
}

static void fd_reuse_keeps_the_original_file(void)
{
	char path_a[] = "/tmp/aioctx-faults-a-XXXXXX", path_b[] = "/tmp/aioctx-faults-b-XXXXXX";
	scratch(path_a);
	scratch(path_b);
	int fd = open(path_a, O_RDWR | O_DIRECT);
	CHECK(fd >= 0);
	io_context_t ctx = 0;
	CHECK_RET(io_setup(2 * WRITES, &ctx), 0);
	static struct iocb iocbs[2 * WRITES];
	struct iocb *list[WRITES];
	char *bufs = aligned(WRITES * BLOCK);
	memset(bufs, 0xab, WRITES * BLOCK);
	for (int i = 0; i < WRITES; i++) {
		io_prep_pwrite(&iocbs[i], fd, bufs + i * BLOCK, BLOCK, (long long)i * BLOCK);
		list[i] = &iocbs[i];
	}
	CHECK_RET(io_submit(ctx, WRITES, list), WRITES);
	/* The number now names another file, at once, while the writes are in flight. */
	CHECK(close(fd) == 0);
	int other = open(path_b, O_RDWR | O_DIRECT);
	CHECK(other >= 0);
	if (other != fd) {
		CHECK(dup2(other, fd) == fd);
		close(other);
	}
	char *later = aligned(BLOCK);
	memset(later, 0xcd, BLOCK);
	for (int i = 0; i < WRITES; i++) {
		io_prep_pwrite(&iocbs[WRITES + i], fd, later, BLOCK, (long long)i * BLOCK);
		list[i] = &iocbs[WRITES + i];
	}
	CHECK_RET(io_submit(ctx, WRITES, list), WRITES);
	struct io_event events[2 * WRITES];
	reap(ctx, 2 * WRITES, events);
	for (int i = 0; i < 2 * WRITES; i++)
		CHECK(events[i].res == BLOCK);
	CHECK_RET(io_destroy(ctx), 0);
	close(fd);
	unsigned char *a = malloc(WRITES * BLOCK), *b = malloc(WRITES * BLOCK);
	int fa = open(path_a, O_RDONLY), fb = open(path_b, O_RDONLY);
	CHECK(pread(fa, a, WRITES * BLOCK, 0) == WRITES * BLOCK);
	CHECK(pread(fb, b, WRITES * BLOCK, 0) == WRITES * BLOCK);
	for (int i = 0; i < WRITES * BLOCK; i++) {
		CHECK(a[i] == 0xab);
		CHECK(b[i] == 0xcd);
	}
	close(fa);
	close(fb);
	unlink(path_a);
	unlink(path_b);
	free(a);
	free(b);
	free(bufs);
	free(later);
}

static volatile sig_atomic_t signalled;
static void on_signal(int sig)
{
	(void)sig;
	signalled = 1;
}

struct interrupter {
	pthread_t target;
	int pipe_w;
};

/* Signals the waiter, then (after it saw EINTR) makes its request complete. */
static void *interrupt_then_complete(void *arg)
{
	struct interrupter *it = arg;
	usleep(200 * 1000);
	CHECK(pthread_kill(it->target, SIGUSR1) == 0);
	usleep(100 * 1000);
	/* Two bytes: the read takes one, the other keeps the pipe readable for the poll. */
	CHECK(write(it->pipe_w, "xy", 2) == 2);
	return NULL;
}

static void signal_interrupts_getevents_and_the_event_still_comes(void)
{
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART */
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
	io_context_t ctx = 0;
	CHECK_RET(io_setup(8, &ctx), 0);
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	struct iocb poll_iocb, read_iocb, *list[2] = {&poll_iocb, &read_iocb};
	static char byte;
	io_prep_poll(&poll_iocb, pipefd[0], POLLIN);
	poll_iocb.data = (void *)1;
	io_prep_pread(&read_iocb, pipefd[0], &byte, 1, 0);
	read_iocb.data = (void *)2;
	CHECK_RET(io_submit(ctx, 2, list), 2);
	struct interrupter it = {pthread_self(), pipefd[1]};
	pthread_t thread;
	signalled = 0;
	CHECK(pthread_create(&thread, NULL, interrupt_then_complete, &it) == 0);
	struct io_event events[2];
	CHECK_RET(io_getevents(ctx, 2, 2, events, NULL), -EINTR);
	CHECK(signalled);
	CHECK(pthread_join(thread, NULL) == 0);
	reap(ctx, 2, events);
	for (int i = 0; i < 2; i++) {
		if (events[i].data == (void *)1)
			CHECK(events[i].res & POLLIN);
		else
			CHECK(events[i].data == (void *)2 && events[i].res == 1 && byte == 'x');
	}
	CHECK_RET(io_destroy(ctx), 0);
	close(pipefd[0]);
	close(pipefd[1]);
	signal(SIGUSR1, SIG_DFL);
}

/* A child that leaves requests that never finish (polls, a read of a pipe nobody writes)
   and O_DIRECT reads in flight, then ends the way `how` says. */
static void leave_requests_and_end(int how)
{
	io_context_t ctx = 0;
	CHECK_RET(io_setup(64, &ctx), 0);
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	int file = temp_file(1 << 20, 2, O_RDONLY | O_DIRECT);
	static char rdbuf[8][8];
	static struct iocb iocbs[24];
	struct iocb *list[24];
	for (int i = 0; i < 8; i++)
		io_prep_pread(&iocbs[i], pipefd[0], rdbuf[i], 8, 0);
	for (int i = 8; i < 16; i++)
		io_prep_poll(&iocbs[i], pipefd[0], POLLIN);
	for (int i = 16; i < 24; i++)
		io_prep_pread(&iocbs[i], file, aligned(65536), 65536, (i - 16) * 65536);
	for (int i = 0; i < 24; i++)
		list[i] = &iocbs[i];
	CHECK_RET(io_submit(ctx, 24, list), 24);
	usleep(20 * 1000);
	if (how == SIGTERM)
		raise(SIGTERM);
	exit(0);
}

/* Waits up to 60 s for `child`; its status, or -1 if it is still running (then killed). */
static int wait_promptly(pid_t child)
{
	for (int i = 0; i < 6000; i++) {
		int status;
		pid_t got = waitpid(child, &status, WNOHANG);
		CHECK(got >= 0);
		if (got == child)
			return status;
		usleep(10 * 1000);
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return -1;
}

static void exit_and_sigterm_end_promptly(void)
{
	int hows[] = {0, SIGTERM};
	for (int i = 0; i < 2; i++) {
		pid_t child = fork();
		CHECK(child >= 0);
		if (child == 0)
			leave_requests_and_end(hows[i]);
		int status = wait_promptly(child);
		CHECK(status != -1);
		if (hows[i] == SIGTERM)
			CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
		else
			CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
}

static void fork_child_cannot_use_the_parent_context(void)
{
	io_context_t ctx = 0;
	CHECK_RET(io_setup(64, &ctx), 0);
	int file = temp_file(4 << 20, 9, O_RDONLY | O_DIRECT);
	static struct iocb iocbs[64];
	struct iocb *list[64];
	char *bufs = aligned(64 * 65536);
	for (int i = 0; i < 64; i++) {
		io_prep_pread(&iocbs[i], file, bufs + i * 65536, 65536, (long long)i * 65536);
		iocbs[i].data = (void *)(long)i;
		list[i] = &iocbs[i];
	}
	CHECK_RET(io_submit(ctx, 64, list), 64);
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		struct timespec zero = {0, 0};
		struct io_event event;
		struct iocb noop, *one[1] = {&noop};
		io_prep_pread(&noop, file, bufs, 4096, 0);
		CHECK_RET(io_submit(ctx, 1, one), -EINVAL);
		CHECK_RET(io_getevents(ctx, 0, 1, &event, &zero), -EINVAL);
		CHECK_RET(io_cancel(ctx, &iocbs[0], &event), -EINVAL);
		CHECK_RET(io_destroy(ctx), -EINVAL);
		io_context_t own = 0;
		CHECK_RET(io_setup(8, &own), 0);
		char *mine = aligned(4096);
		io_prep_pread(&noop, file, mine, 4096, 4096);
		CHECK_RET(io_submit(own, 1, one), 1);
		reap(own, 1, &event);
		CHECK(event.res == 4096 && (unsigned char)mine[0] == file_byte(4096, 9));
		CHECK_RET(io_destroy(own), 0);
		CHECK_RET(io_destroy(ctx), -EINVAL);
		_exit(0);
	}
	struct io_event events[64];
	reap(ctx, 64, events);
	for (int i = 0; i < 64; i++) {
		long n = (long)events[i].data;
		CHECK(events[i].res == 65536);
		for (int j = 0; j < 65536; j += 4093)
			CHECK((unsigned char)bufs[n * 65536 + j] == file_byte(n * 65536 + j, 9));
	}
	int status = wait_promptly(child);
	CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_RET(io_destroy(ctx), 0);
	close(file);
	free(bufs);
}

static void bad_handles_are_einval(void)
{
	io_context_t live = 0;
	CHECK_RET(io_setup(8, &live), 0);
	struct iocb iocb, *list[1] = {&iocb};
	io_prep_pread(&iocb, 0, NULL, 0, 0);
	struct io_event event;
	struct timespec zero = {0, 0};
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (int i = 0; i < 2000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		io_context_t bad = (io_context_t)(uintptr_t)(i % 3 == 0 ? x & ~0xfffull : x);
		if (bad == live)
			continue;
		CHECK_RET(io_submit(bad, 1, list), -EINVAL);
		CHECK_RET(io_getevents(bad, 0, 1, &event, &zero), -EINVAL);
		CHECK_RET(io_cancel(bad, &iocb, &event), -EINVAL);
		CHECK_RET(io_destroy(bad), -EINVAL);
	}
	/* Addresses inside the live context's ring are not handles either. */
	CHECK_RET(io_destroy((io_context_t)((char *)live + 32)), -EINVAL);
	CHECK_RET(io_destroy(live), 0);
	CHECK_RET(io_destroy(live), -EINVAL);
	CHECK_RET(io_submit(live, 1, list), -EINVAL);
	CHECK_RET(io_getevents(live, 0, 1, &event, &zero), -EINVAL);
	CHECK_RET(io_cancel(live, &iocb, &event), -EINVAL);
	/* A handle from before a fork, in the child: -EINVAL, also io_destroy twice. */
	io_context_t before = 0;
	CHECK_RET(io_setup(8, &before), 0);
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		CHECK_RET(io_destroy(before), -EINVAL);
		CHECK_RET(io_destroy(before), -EINVAL);
		CHECK_RET(io_submit(before, 1, list), -EINVAL);
		_exit(0);
	}
	int status = wait_promptly(child);
	CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_RET(io_destroy(before), 0);
}

int main(void)
{
	report_library();
	fd_reuse_keeps_the_original_file();
	signal_interrupts_getevents_and_the_event_still_comes();
	fork_child_cannot_use_the_parent_context();
	bad_handles_are_einval();
	exit_and_sigterm_end_promptly();
	puts("ok");
	return 0;
}
