/* SPEC §1 and §2 io_destroy: it waits for what is in flight, every concurrent destroyer
   waits too (the first gets 0, the others -EINVAL), and the handle dies with it. */
#include "check.h"
#include <poll.h>

#define DESTROYERS 4

struct destroyer {
	io_context_t ctx;
	volatile int done;
	int ret;
};

static void *destroy(void *arg)
{
	struct destroyer *d = arg;
	d->ret = io_destroy(d->ctx);
	d->done = 1;
	return NULL;
}

int main(void)
{
	report_library();
	CHECK_RET(io_destroy(NULL), -EINVAL);
	CHECK_RET(io_destroy((io_context_t)0x1000), -EINVAL);
	CHECK_RET(io_destroy(MINUS_ONE), -EINVAL);

	/* Concurrent destroys of a context with a read in flight: every destroyer returns
	   only once nothing can touch the buffer. A read already running waits for its data
	   (the first destroyer gets 0, the others -EINVAL); an engine that can stop it
	   cancels it, and then the data that arrives later must never land. */
	io_context_t ctx = 0;
	CHECK_RET(io_setup(8, &ctx), 0);
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	char buf[4] = "....";
	struct iocb rd;
	struct iocb *list[1] = {&rd};
	io_prep_pread(&rd, pipefd[0], buf, sizeof(buf), 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	usleep(100 * 1000); /* let a thread-pool worker start the read */
	struct destroyer d[DESTROYERS];
	pthread_t threads[DESTROYERS];
	for (int i = 0; i < DESTROYERS; i++) {
		d[i] = (struct destroyer){.ctx = ctx};
		CHECK(pthread_create(&threads[i], NULL, destroy, &d[i]) == 0);
	}
	usleep(200 * 1000);
	int early = 0;
	for (int i = 0; i < DESTROYERS; i++)
		early += d[i].done;
	/* Submits to a dying or dead context fail. */
	CHECK_RET(io_submit(ctx, 1, list), -EINVAL);
	if (early)
		for (int i = 0; i < DESTROYERS; i++)
			pthread_join(threads[i], NULL);
	CHECK(write(pipefd[1], "data", 4) == 4);
	int zeros = 0, einvals = 0;
	for (int i = 0; i < DESTROYERS; i++) {
		if (!early)
			pthread_join(threads[i], NULL);
		zeros += d[i].ret == 0;
		einvals += d[i].ret == -EINVAL;
	}
	CHECK(zeros == 1 && einvals == DESTROYERS - 1);
	if (early) {
		usleep(100 * 1000);
		CHECK(memcmp(buf, "....", 4) == 0);
	} else {
		CHECK(memcmp(buf, "data", 4) == 0);
	}

	/* The handle is dead for every call. */
	struct io_event event;
	struct timespec zero = {0, 0};
	CHECK_RET(io_destroy(ctx), -EINVAL);
	CHECK_RET(io_submit(ctx, 1, list), -EINVAL);
	CHECK_RET(io_getevents(ctx, 0, 1, &event, &zero), -EINVAL);

	/* Requests that would never finish are cancelled; pending events are discarded. */
	ctx = 0;
	CHECK_RET(io_setup(8, &ctx), 0);
	struct iocb poll_iocb, noop;
	io_prep_poll(&poll_iocb, pipefd[0], POLLIN);
	memset(&noop, 0, sizeof(noop));
	noop.aio_fildes = pipefd[0];
	noop.aio_lio_opcode = 6;
	struct iocb *both[2] = {&poll_iocb, &noop};
	CHECK_RET(io_submit(ctx, 2, both), 2);
	CHECK_RET(io_destroy(ctx), 0);
	CHECK_RET(io_getevents(ctx, 0, 1, &event, &zero), -EINVAL);

	close(pipefd[0]);
	close(pipefd[1]);
	puts("ok");
	return 0;
}
