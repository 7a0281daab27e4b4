/* SPEC §2 io_getevents: only the events delivered are written to the caller's array (never
   a read-back or rewrite of the rest of it), and an event leaves the ring only once it was
   written out. A thread writing just past a 2-event array loses no write while io_getevents
   is called with nr 16 on it; an array that ends at an unmapped page gets the events that
   fit (a PROT_NONE page: an unmapped one could be mapped again), as the kernel gives them, and the rest stay in the ring. */
#include "check.h"
#include <sys/eventfd.h>

static io_context_t ctx;
static int efd, null_fd;
static struct iocb iocbs[64];
static int next_tag;

/* Submits `count` NOOPs and waits (on the eventfd) until their events are in the ring. */
static int submit_posted(int count)
{
	int first = next_tag;
	for (int i = 0; i < count; i++) {
		struct iocb *iocb = &iocbs[next_tag % 64];
		memset(iocb, 0, sizeof(*iocb));
		iocb->aio_fildes = null_fd;
		iocb->aio_lio_opcode = 6;
		iocb->data = (void *)(uintptr_t)next_tag++;
		io_set_eventfd(iocb, efd);
		struct iocb *list[1] = {iocb};
		CHECK_RET(io_submit(ctx, 1, list), 1);
	}
	for (uint64_t posted = 0, n; posted < (uint64_t)count; posted += n)
		CHECK(read(efd, &n, sizeof(n)) == sizeof(n));
	return first;
}

/* Checks that `events` are exactly the `count` events tagged from `first` (engines may
   complete them in any order). */
static void check_events(const struct io_event *events, int count, int first)
{
	int seen[64] = {0};
	CHECK(count <= 64);
	for (int i = 0; i < count; i++) {
		int tag = (int)(uintptr_t)events[i].data;
		CHECK(tag >= first && tag < first + count && !seen[tag - first]);
		seen[tag - first] = 1;
		CHECK(events[i].obj == &iocbs[tag % 64]);
		CHECK(events[i].res == 0 && events[i].res2 == 0);
	}
}

/* A 2-event array, then words another thread keeps writing. */
static struct {
	struct io_event events[2];
	unsigned long neighbours[62];
} area __attribute__((aligned(64)));

static volatile int stop;
static long writes, lost;

static void *write_next_to_the_array(void *arg)
{
	(void)arg;
	for (unsigned long round = 1; !stop; round++) {
		for (int i = 0; i < 62; i++) {
			if (__atomic_load_n(&area.neighbours[i], __ATOMIC_RELAXED) != round - 1)
				lost++;
			__atomic_store_n(&area.neighbours[i], round, __ATOMIC_RELAXED);
			__atomic_fetch_add(&writes, 1, __ATOMIC_RELAXED);
		}
	}
	return NULL;
}

static void neighbours_keep_their_writes(void)
{
	struct timespec zero = {0, 0}, limit = {5, 0};
	pthread_t writer;
	CHECK(pthread_create(&writer, NULL, write_next_to_the_array, NULL) == 0);
	/* On a loaded machine the writer may not run before the rounds are over. */
	while (__atomic_load_n(&writes, __ATOMIC_RELAXED) == 0)
		sched_yield();
	for (int round = 0; round < 3000; round++) {
		CHECK_RET(io_getevents(ctx, 0, 16, area.events, &zero), 0);
		if (round % 10 == 0) {
			int first = submit_posted(round % 20 == 0 ? 1 : 2);
			int want = round % 20 == 0 ? 1 : 2;
			CHECK_RET(io_getevents(ctx, want, 16, area.events, &limit), want);
			check_events(area.events, want, first);
		}
	}
	stop = 1;
	pthread_join(writer, NULL);
	CHECK(writes > 0);
	if (lost)
		fprintf(stderr, "%ld of %ld writes next to the array lost\n", lost, writes);
	CHECK(lost == 0);
}

static void only_delivered_events_are_written(void)
{
	struct io_event events[8];
	struct timespec zero = {0, 0};
	memset(events, 0xa5, sizeof(events));
	CHECK_RET(io_getevents(ctx, 0, 8, events, &zero), 0);
	int first = submit_posted(3);
	CHECK_RET(io_getevents(ctx, 3, 8, events, &zero), 3);
	check_events(events, 3, first);
	for (size_t b = 3 * sizeof(events[0]); b < sizeof(events); b++)
		CHECK(((unsigned char *)events)[b] == 0xa5);
}

/* Arrays that end at an unmapped page: the events that fit are delivered, the rest stay. */
static void short_arrays_get_what_fits(void)
{
	char *pages = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(pages != MAP_FAILED);
	CHECK(mprotect(pages + 4096, 4096, PROT_NONE) == 0);
	struct io_event *one = (struct io_event *)(pages + 4096 - sizeof(struct io_event));
	struct io_event *two = one - 1;
	struct io_event *straddling = (struct io_event *)(pages + 4096 - 16);
	struct io_event events[8];
	struct timespec zero = {0, 0}, limit = {5, 0};

	/* One event ready, room for one. */
	int first = submit_posted(1);
	CHECK_RET(io_getevents(ctx, 1, 4, one, &limit), 1);
	check_events(one, 1, first);

	/* Three ready, room for two: two now, the third after. */
	first = submit_posted(3);
	CHECK_RET(io_getevents(ctx, 1, 8, two, &limit), 2);
	events[0] = two[0];
	events[1] = two[1];
	CHECK_RET(io_getevents(ctx, 1, 8, events + 2, &zero), 1);
	check_events(events, 3, first);

	/* Room for none: EFAULT, and the event is still there. */
	first = submit_posted(1);
	CHECK_RET(io_getevents(ctx, 1, 1, straddling, &limit), -EFAULT);
	CHECK_RET(io_getevents(ctx, 1, 1, (struct io_event *)(pages + 4096), &limit), -EFAULT);
	CHECK_RET(io_getevents(ctx, 1, 8, events, &zero), 1);
	check_events(events, 1, first);

	/* Nothing ready: a bad array is never touched, so nothing fails. */
	CHECK_RET(io_getevents(ctx, 0, 8, (struct io_event *)(pages + 4096), &zero), 0);
	CHECK(munmap(pages, 8192) == 0);
}

int main(void)
{
	report_library();
	CHECK_RET(io_setup(32, &ctx), 0);
	efd = eventfd(0, EFD_CLOEXEC);
	null_fd = open("/dev/null", O_RDONLY);
	CHECK(efd >= 0 && null_fd >= 0);

	only_delivered_events_are_written();
	short_arrays_get_what_fits();
	neighbours_keep_their_writes();

	CHECK_RET(io_destroy(ctx), 0);
	close(efd);
	close(null_fd);
	puts("ok");
	return 0;
}
