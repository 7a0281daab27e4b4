/* SPEC §3: after fork() the child's copies of the parent's contexts are invalid; the
   child may set up its own; the parent is unaffected. */
#include "check.h"
#include <poll.h>
#include <sys/wait.h>

/* Reads 4 bytes from a pipe through `ctx` (a pool worker serves a pipe read). */
static void pipe_read(io_context_t ctx)
{
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	char buf[4];
	struct iocb rd;
	struct iocb *list[1] = {&rd};
	io_prep_pread(&rd, pipefd[0], buf, sizeof(buf), 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	usleep(20 * 1000);
	CHECK(write(pipefd[1], "fork", 4) == 4);
	struct io_event event;
	reap(ctx, 1, &event);
	CHECK(event.res == 4 && memcmp(buf, "fork", 4) == 0);
	close(pipefd[0]);
	close(pipefd[1]);
}

/* Polls a pipe through `ctx` until a byte arrives (the poller serves it, or the kernel). */
static void pipe_poll(io_context_t ctx)
{
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	struct iocb poll;
	struct iocb *list[1] = {&poll};
	io_prep_poll(&poll, pipefd[0], POLLIN);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	usleep(20 * 1000);
	CHECK(write(pipefd[1], "p", 1) == 1);
	struct io_event event;
	reap(ctx, 1, &event);
	CHECK(event.res & POLLIN);
	close(pipefd[0]);
	close(pipefd[1]);
}

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_setup(8, &ctx), 0);
	pipe_read(ctx);
	pipe_poll(ctx);
	struct iocb noop;
	memset(&noop, 0, sizeof(noop));
	noop.aio_fildes = 0;
	noop.aio_lio_opcode = 6;
	struct iocb *list[1] = {&noop};
	struct io_event event;
	struct timespec zero = {0, 0};

	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		CHECK_RET(io_submit(ctx, 1, list), -EINVAL);
		CHECK_RET(io_getevents(ctx, 0, 1, &event, &zero), -EINVAL);
		CHECK_RET(io_cancel(ctx, &noop, &event), -EINVAL);
		CHECK_RET(io_destroy(ctx), -EINVAL);
		io_context_t own = 0;
		CHECK_RET(io_setup(8, &own), 0);
		/* The child's own context works on every engine: the pool, the poller and the
		   kernel-AIO engine start afresh in it. */
		pipe_read(own);
		pipe_poll(own);
		CHECK_RET(io_destroy(own), 0);
		_exit(0);
	}
	int status;
	CHECK(waitpid(child, &status, 0) == child);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	pipe_read(ctx);
	pipe_poll(ctx);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap(ctx, 1, &event);
	CHECK_RET(io_destroy(ctx), 0);
	puts("ok");
	return 0;
}
