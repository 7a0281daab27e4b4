/* SPEC §2 libaio ABI facts: this binary asks for the old LIBAIO_0.1 forms by version, as
   binaries linked long ago do, and they behave as libaio 0.3.113's compat functions. */
#include "check.h"
#include <poll.h>

__asm__(".symver io_getevents_0_1, io_getevents@LIBAIO_0.1");
extern int io_getevents_0_1(io_context_t ctx, long nr, struct io_event *events,
			    struct timespec *timeout);
__asm__(".symver io_cancel_0_1, io_cancel@LIBAIO_0.1");
extern int io_cancel_0_1(io_context_t ctx, struct iocb *iocb);
__asm__(".symver io_queue_wait_0_1, io_queue_wait@LIBAIO_0.1");
extern int io_queue_wait_0_1(io_context_t ctx, struct timespec *timeout);

static int pipefd[2];

static void *write_later(void *arg)
{
	(void)arg;
	usleep(100 * 1000);
	CHECK(write(pipefd[1], "late", 4) == 4);
	return NULL;
}

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_setup(8, &ctx), 0);
	CHECK(pipe(pipefd) == 0);
	struct io_event events[4];
	struct timespec short_wait = {0, 20 * 1000 * 1000};

	/* io_getevents@0.1 has no min_nr: it waits for at least one event. */
	CHECK_RET(io_getevents_0_1(ctx, 4, events, &short_wait), 0);
	char buf[4];
	struct iocb rd;
	struct iocb *list[1] = {&rd};
	io_prep_pread(&rd, pipefd[0], buf, sizeof(buf), 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	pthread_t writer;
	CHECK(pthread_create(&writer, NULL, write_later, NULL) == 0);
	CHECK_RET(io_getevents_0_1(ctx, 4, events, NULL), 1);
	CHECK(events[0].obj == &rd && events[0].res == 4);
	pthread_join(writer, NULL);
	CHECK_RET(io_getevents_0_1(ctx, 4, events, MINUS_ONE), -EFAULT);

	/* io_cancel@0.1 takes no result. */
	struct iocb poll_iocb;
	io_prep_poll(&poll_iocb, pipefd[0], POLLIN);
	list[0] = &poll_iocb;
	CHECK_RET(io_submit(ctx, 1, list), 1);
	CHECK_RET(io_cancel_0_1(ctx, &poll_iocb), -EINPROGRESS);
	reap(ctx, 1, events);
	CHECK(events[0].res == -ECANCELED);
	CHECK_RET(io_cancel_0_1(ctx, NULL), -EFAULT);

	/* io_queue_wait@0.1 is io_getevents(ctx, 0, 0, NULL, timeout). */
	CHECK_RET(io_queue_wait_0_1(ctx, &short_wait), 0);
	CHECK_RET(io_queue_wait_0_1((io_context_t)0x1000, NULL), -EINVAL);

	CHECK_RET(io_destroy(ctx), 0);
	puts("ok");
	return 0;
}
