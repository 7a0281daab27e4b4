/* SPEC §2 io_getevents: every thread waiting on a context that is destroyed wakes, all of
   them, not one; those that took nothing return -EINVAL. Two, four and eight reapers, as a
   program with a pool of reaper threads has; half wait with no timeout, half with the
   longest one there is. */
#include "check.h"
#include <limits.h>
#include <time.h>

#define MOST 8

struct waiter {
	io_context_t ctx;
	int longest;
	long ret;
};

static void *get_events(void *arg)
{
	struct waiter *w = arg;
	struct io_event event;
	struct timespec longest = {.tv_sec = LONG_MAX, .tv_nsec = 999999999};
	w->ret = io_getevents(w->ctx, 1, 1, &event, w->longest ? &longest : NULL);
	return NULL;
}

static void destroy_with_waiters(int count)
{
	io_context_t ctx = 0;
	CHECK_RET(io_setup(16, &ctx), 0);
	struct waiter waiters[MOST];
	pthread_t threads[MOST];
	for (int i = 0; i < count; i++) {
		waiters[i] = (struct waiter){.ctx = ctx, .longest = i % 2, .ret = 1};
		CHECK(pthread_create(&threads[i], NULL, get_events, &waiters[i]) == 0);
	}
	usleep(200 * 1000); /* let them all fall asleep */
	CHECK_RET(io_destroy(ctx), 0);
	struct timespec deadline;
	CHECK(clock_gettime(CLOCK_REALTIME, &deadline) == 0);
	deadline.tv_sec += 60; /* promptly, on a loaded machine */
	for (int i = 0; i < count; i++) {
		if (pthread_timedjoin_np(threads[i], NULL, &deadline) != 0) {
			fprintf(stderr, "%d waiters: waiter %d still sleeps after io_destroy\n",
				count, i);
			exit(1);
		}
		CHECK(waiters[i].ret == -EINVAL);
	}
}

int main(void)
{
	report_library();
	destroy_with_waiters(2);
	destroy_with_waiters(4);
	destroy_with_waiters(8);
	return 0;
}
