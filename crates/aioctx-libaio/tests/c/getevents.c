/* SPEC §2 io_getevents and io_pgetevents: order of checks, waiting, signals, destroy. */
#include "check.h"
#include <poll.h>
#include <signal.h>

static void prep_noop(struct iocb *iocb, int fd, long data)
{
	memset(iocb, 0, sizeof(*iocb));
	iocb->aio_fildes = fd;
	iocb->aio_lio_opcode = 6;
	iocb->data = (void *)data;
}

static volatile sig_atomic_t signalled;
static void on_signal(int sig)
{
	(void)sig;
	signalled = 1;
}

struct waiter {
	io_context_t ctx;
	int ret;
	struct io_event event;
};

static void *wait_forever(void *arg)
{
	struct waiter *w = arg;
	w->ret = io_getevents(w->ctx, 1, 1, &w->event, NULL);
	return NULL;
}

static void *kick(void *arg)
{
	usleep(100 * 1000);
	pthread_kill(*(pthread_t *)arg, SIGUSR1);
	return NULL;
}

static void *destroy(void *arg)
{
	io_context_t ctx = arg;
	return (void *)(long)io_destroy(ctx);
}

int main(void)
{
	report_library();
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	CHECK(sigaction(SIGUSR1, &sa, NULL) == 0); /* no SA_RESTART: waits end with EINTR */

	io_context_t ctx = 0;
	CHECK_RET(io_setup(32, &ctx), 0);
	struct io_event events[32];
	struct timespec zero = {0, 0}, short_wait = {0, 50 * 1000 * 1000};

	/* A bad timeout is EFAULT first; then ctx, min_nr < 0, nr < min_nr are EINVAL. */
	CHECK_RET(io_getevents((io_context_t)0x1000, 1, 1, events, MINUS_ONE), -EFAULT);
	CHECK_RET(io_getevents((io_context_t)0x1000, -1, 1, events, &zero), -EINVAL);
	CHECK_RET(io_getevents(ctx, -1, 1, events, &zero), -EINVAL);
	CHECK_RET(io_getevents(ctx, 2, 1, events, &zero), -EINVAL);
	CHECK_RET(io_getevents(ctx, 0, -1, events, &zero), -EINVAL);

	/* Zero timeout: no wait. A timeout that elapses: what is there (nothing). */
	CHECK_RET(io_getevents(ctx, 1, 32, events, &zero), 0);
	CHECK_RET(io_getevents(ctx, 1, 32, events, &short_wait), 0);

	/* Oldest first, at most nr, fields as the iocbs said. */
	int file = temp_file(4096, 1, O_RDWR);
	struct iocb iocbs[5], *list[5];
	volatile unsigned *tail = &((unsigned *)ctx)[3];
	for (int i = 0; i < 5; i++) {
		/* one at a time, each posted before the next is submitted: a known order */
		unsigned before = *tail;
		prep_noop(&iocbs[i], file, 100 + i);
		list[i] = &iocbs[i];
		CHECK_RET(io_submit(ctx, 1, &list[i]), 1);
		for (int spins = 0; *tail == before; spins++) {
			CHECK(spins < 5000);
			usleep(1000);
		}
	}
	CHECK_RET(io_getevents(ctx, 3, 3, events, NULL), 3);
	CHECK_RET(io_getevents(ctx, 2, 32, events + 3, NULL), 2);
	for (int i = 0; i < 5; i++) {
		CHECK(events[i].data == (void *)(long)(100 + i));
		CHECK(events[i].obj == &iocbs[i]);
		CHECK(events[i].res == 0 && events[i].res2 == 0);
	}

	/* Waits for min_nr: a read of a pipe completes when data arrives. */
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	char buf[4];
	struct iocb rd;
	struct iocb *rdp = &rd;
	io_prep_pread(&rd, pipefd[0], buf, 4, 0);
	CHECK_RET(io_submit(ctx, 1, &rdp), 1);
	CHECK_RET(io_getevents(ctx, 1, 1, events, &short_wait), 0);
	CHECK(write(pipefd[1], "ping", 4) == 4);
	CHECK_RET(io_getevents(ctx, 1, 1, events, NULL), 1);
	CHECK(events[0].res == 4 && memcmp(buf, "ping", 4) == 0);

	/* A signal interrupts a wait with nothing taken: EINTR. */
	pthread_t self = pthread_self(), kicker;
	CHECK_RET(io_submit(ctx, 1, &rdp), 1);
	signalled = 0;
	CHECK(pthread_create(&kicker, NULL, kick, &self) == 0);
	CHECK_RET(io_getevents(ctx, 1, 1, events, NULL), -EINTR);
	CHECK(signalled);
	pthread_join(kicker, NULL);

	/* io_pgetevents installs its mask for the wait, atomically: a pending signal the
	   mask unblocks interrupts the wait at once. A bad mask pointer is EFAULT. */
	sigset_t block, during;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	CHECK(pthread_sigmask(SIG_BLOCK, &block, NULL) == 0);
	signalled = 0;
	CHECK(raise(SIGUSR1) == 0);
	CHECK(!signalled);
	sigemptyset(&during);
	struct timespec long_wait = {30, 0};
	CHECK_RET(io_pgetevents(ctx, 1, 1, events, &long_wait, MINUS_ONE), -EFAULT);
	CHECK_RET(io_pgetevents(ctx, 1, 1, events, &long_wait, &during), -EINTR);
	CHECK(signalled);
	CHECK(pthread_sigmask(SIG_UNBLOCK, &block, NULL) == 0);
	/* NULL mask: a plain io_getevents. */
	CHECK(write(pipefd[1], "pong", 4) == 4);
	CHECK_RET(io_pgetevents(ctx, 1, 1, events, NULL, NULL), 1);
	CHECK(events[0].res == 4 && memcmp(buf, "pong", 4) == 0);

	/* Destroyed while waiting: the waiter leaves with EINVAL if it took nothing, or with
	   the read's event if its engine cancelled it (io_uring, sim); an engine that cannot
	   stop the read (threads, kaio) makes destroy wait for it. */
	CHECK_RET(io_submit(ctx, 1, &rdp), 1);
	struct waiter w = {.ctx = ctx};
	pthread_t waiter, destroyer;
	CHECK(pthread_create(&waiter, NULL, wait_forever, &w) == 0);
	usleep(50 * 1000);
	CHECK(pthread_create(&destroyer, NULL, destroy, ctx) == 0);
	pthread_join(waiter, NULL);
	CHECK(w.ret == -EINVAL || (w.ret == 1 && w.event.res == -ECANCELED));
	CHECK(write(pipefd[1], "done", 4) == 4);
	void *destroyed;
	pthread_join(destroyer, &destroyed);
	CHECK((long)destroyed == 0);
	CHECK_RET(io_getevents(ctx, 0, 1, events, &zero), -EINVAL);

	close(pipefd[0]);
	close(pipefd[1]);
	close(file);
	puts("ok");
	return 0;
}
