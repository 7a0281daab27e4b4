/* SPEC §1 "Requests that would never finish are cancelled first": reads and writes of
   pipes and sockets whose peer never comes, also a write already partly done. io_destroy
   returns promptly and nothing touches their memory or files afterwards; io_cancel of one
   is -EINPROGRESS, then its event is -ECANCELED; a process that calls exit with them in
   flight exits promptly. */
#include "check.h"
#include <sys/socket.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

/* More than a pipe or socket here holds. */
#define BIG (16 << 20)
/* "Promptly", generously (the machine is shared): what never finishes never returns. */
#define PROMPTLY 20.0

static double now(void)
{
	struct timespec t;
	CHECK(clock_gettime(CLOCK_MONOTONIC, &t) == 0);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* A pipe read nobody writes, a write of more than a pipe holds with one behind it, and a
   socket read nobody answers. */
struct never_ready {
	int read_pipe[2], write_pipe[2], sock[2];
	struct iocb iocbs[4];
	char small[3][16];
	char *big;
};

static void submit_never_ready(io_context_t ctx, struct never_ready *n)
{
	memset(n, 0, sizeof(*n));
	CHECK(pipe(n->read_pipe) == 0);
	CHECK(pipe(n->write_pipe) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, n->sock) == 0);
	n->big = malloc(BIG);
	CHECK(n->big != NULL);
	memset(n->big, 1, BIG);
	io_prep_pread(&n->iocbs[0], n->read_pipe[0], n->small[0], 16, 0);
	io_prep_pwrite(&n->iocbs[1], n->write_pipe[1], n->big, BIG, 0);
	io_prep_pwrite(&n->iocbs[2], n->write_pipe[1], n->small[1], 16, 0);
	io_prep_pread(&n->iocbs[3], n->sock[0], n->small[2], 16, 0);
	struct iocb *list[4];
	for (int i = 0; i < 4; i++) {
		n->iocbs[i].data = (void *)(long)(i + 1);
		list[i] = &n->iocbs[i];
	}
	CHECK_RET(io_submit(ctx, 4, list), 4);
	usleep(50 * 1000);
}

static size_t drain_to_eof(int fd)
{
	static char buf[1 << 16];
	size_t total = 0;
	ssize_t got;
	while ((got = read(fd, buf, sizeof(buf))) > 0)
		total += got;
	CHECK(got == 0);
	return total;
}

static void destroy_returns_promptly(void)
{
	io_context_t ctx = 0;
	CHECK_RET(io_setup(16, &ctx), 0);
	struct never_ready n;
	submit_never_ready(ctx, &n);
	/* Room for more of the big write, so that it is mid-transfer when destroy runs. */
	static char some[8192];
	CHECK(read(n.write_pipe[0], some, sizeof(some)) == sizeof(some));
	usleep(50 * 1000);
	double started = now();
	CHECK_RET(io_destroy(ctx), 0);
	CHECK(now() - started < PROMPTLY);
	/* Nothing of the context touches the memory or the files again. */
	memset(n.big, 0xee, BIG);
	free(n.big);
	CHECK(write(n.read_pipe[1], "late", 4) == 4);
	CHECK(write(n.sock[1], "late", 4) == 4);
	usleep(50 * 1000);
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 16; j++)
			CHECK(n.small[i][j] == 0);
	close(n.write_pipe[1]);
	CHECK(drain_to_eof(n.write_pipe[0]) + sizeof(some) < BIG);
	char late[4];
	CHECK(read(n.read_pipe[0], late, 4) == 4 && memcmp(late, "late", 4) == 0);
	CHECK(read(n.sock[0], late, 4) == 4 && memcmp(late, "late", 4) == 0);
}

static void cancel_is_einprogress_then_ecanceled(int fd)
{
	io_context_t ctx = 0;
	CHECK_RET(io_setup(4, &ctx), 0);
	static char buf[16];
	struct iocb iocb, *list[1] = {&iocb};
	struct io_event result, events[1];
	io_prep_pread(&iocb, fd, buf, sizeof(buf), 0);
	iocb.data = (void *)9;
	CHECK_RET(io_submit(ctx, 1, list), 1);
	usleep(20 * 1000);
	CHECK_RET(io_cancel(ctx, &iocb, &result), -EINPROGRESS);
	reap(ctx, 1, events);
	CHECK(events[0].obj == &iocb && events[0].data == (void *)9);
	CHECK(events[0].res == -ECANCELED);
	CHECK_RET(io_cancel(ctx, &iocb, &result), -EINVAL);
	CHECK_RET(io_destroy(ctx), 0);
}

/* A child that calls exit with the requests in flight exits, promptly and with 0. */
static void exit_is_prompt(void)
{
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		io_context_t ctx = 0;
		CHECK_RET(io_setup(16, &ctx), 0);
		struct never_ready n;
		submit_never_ready(ctx, &n);
		exit(0);
	}
	double started = now();
	int status;
	pid_t done;
	while ((done = waitpid(child, &status, WNOHANG)) == 0 && now() - started < PROMPTLY)
		usleep(10 * 1000);
	if (done == 0)
		kill(child, SIGKILL);
	CHECK(done == child);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
	report_library();
	destroy_returns_promptly();
	int pipefd[2], sock[2];
	CHECK(pipe(pipefd) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sock) == 0);
	cancel_is_einprogress_then_ecanceled(pipefd[0]);
	cancel_is_einprogress_then_ecanceled(sock[0]);
	exit_is_prompt();
	puts("ok");
	return 0;
}
