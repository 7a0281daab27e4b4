/* SPEC §2 "The ring a C caller holds": the caller owns the memory at the handle and may
   write anything into it. Scribbled tail, nr, magic, id and header_length words are never
   read back: exactly the real events come back and the words are rewritten on the next
   completion. A scribbled head (huge, beyond nr, beyond tail, moved backwards) may cost the
   events it skips, never a panic, a hang, a garbage or repeated event, a ring that stays
   full, or a failed io_destroy. */
#include "check.h"
#include <sys/eventfd.h>

struct aio_ring {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
	struct io_event io_events[];
};

#define BATCH 5
#define MAX_TAGS 4096
#define BUF_LEN 32

static io_context_t ctx;
static struct aio_ring *ring;
static unsigned nr;
static int file, efd;
static struct iocb iocbs[MAX_TAGS];
static char bufs[MAX_TAGS][BUF_LEN];
static int delivered[MAX_TAGS];
static int next_tag;

/* Submits `count` reads, tag t reading t % BUF_LEN + 1 bytes, and waits (on the eventfd,
   never the ring) until all are posted. Returns the first tag. */
static int submit_posted(int count)
{
	int first = next_tag;
	for (int i = 0; i < count; i++) {
		int tag = next_tag++;
		CHECK(tag < MAX_TAGS);
		struct iocb *iocb = &iocbs[tag];
		io_prep_pread(iocb, file, bufs[tag], tag % BUF_LEN + 1, tag % 512);
		io_set_eventfd(iocb, efd);
		iocb->data = (void *)(uintptr_t)tag;
		struct iocb *list[1] = {iocb};
		CHECK_RET(io_submit(ctx, 1, list), 1);
	}
	for (uint64_t posted = 0, n; posted < (uint64_t)count; posted += n)
		CHECK(read(efd, &n, sizeof(n)) == sizeof(n));
	return first;
}

/* Checks an event is one of ours, complete and correct, delivered once. */
static void check_real(const struct io_event *event)
{
	uintptr_t tag = (uintptr_t)event->data;
	CHECK(tag < (uintptr_t)next_tag);
	CHECK(event->obj == &iocbs[tag]);
	CHECK(event->res == (long)(tag % BUF_LEN + 1) && event->res2 == 0);
	CHECK((unsigned char)bufs[tag][0] == file_byte(tag % 512, 3));
	CHECK(!delivered[tag]);
	delivered[tag] = 1;
}

/* Takes every event there is without waiting; returns how many. */
static int drain(void)
{
	struct io_event events[64];
	struct timespec zero = {0, 0};
	int total = 0, got;
	while ((got = io_getevents(ctx, 0, 64, events, &zero)) > 0) {
		for (int i = 0; i < got; i++)
			check_real(&events[i]);
		total += got;
	}
	CHECK_RET(got, 0);
	return total;
}

static void check_header_rewritten(void)
{
	CHECK(ring->nr == nr && ring->magic == 0xa10a10a1 && ring->header_length == 32);
	CHECK(ring->compat_features == 1 && ring->incompat_features == 0);
	CHECK(ring->tail < nr);
}

static void scribble_header(unsigned value)
{
	ring->tail = value;
	ring->nr = value;
	ring->magic = value;
	ring->header_length = value;
	ring->id = value;
	ring->compat_features = value;
	ring->incompat_features = value;
}

/* Every slot can be used again: a full ring's worth of requests is accepted and reaped. */
static void check_ring_usable(void)
{
	CHECK(drain() >= 0);
	int first = submit_posted((int)nr - 1);
	struct io_event events[64];
	struct timespec limit = {5, 0};
	for (int got = 0; got < (int)nr - 1;) {
		int ret = io_getevents(ctx, 1, 64, events, &limit);
		CHECK(ret > 0);
		for (int i = 0; i < ret; i++) {
			CHECK((int)(uintptr_t)events[i].data >= first);
			check_real(&events[i]);
		}
		got += ret;
	}
}

static void header_words(void)
{
	unsigned values[] = {0, 1, nr - 1, nr, nr + 1, 0x7fffffff, 0x80000000, 0xffffffff};
	for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++) {
		/* Scribbled before the completions: they rewrite it. */
		scribble_header(values[v]);
		int first = submit_posted(BATCH);
		check_header_rewritten();
		/* Scribbled after them: io_getevents trusts none of it. */
		scribble_header(values[v]);
		CHECK(drain() == BATCH);
		for (int tag = first; tag < first + BATCH; tag++)
			CHECK(delivered[tag]);
		/* And with a real tail off by a few, into slots never posted. */
		submit_posted(1);
		ring->tail = (ring->tail + 3) % nr;
		CHECK(drain() == 1);
	}
	check_ring_usable();
}

/* A head the library must ignore: every posted event comes back, none twice. */
static void ignored_head(unsigned (*bad)(unsigned head, unsigned tail))
{
	CHECK(drain() == 0);
	int first = submit_posted(BATCH);
	ring->head = bad(ring->head, ring->tail);
	CHECK(drain() == BATCH);
	for (int tag = first; tag < first + BATCH; tag++)
		CHECK(delivered[tag]);
}

static unsigned moved_back_one(unsigned head, unsigned tail)
{
	(void)tail;
	return (head + nr - 1) % nr;
}

static unsigned moved_back_far(unsigned head, unsigned tail)
{
	(void)tail;
	return (head + nr - 3 * BATCH) % nr;
}

static unsigned beyond_tail(unsigned head, unsigned tail)
{
	(void)head;
	return (tail + 2) % nr;
}

/* A head that may skip events: what comes back is real and never repeated. */
static void skipping_head(unsigned value)
{
	drain();
	submit_posted(BATCH);
	ring->head = value;
	CHECK(drain() <= BATCH);
	/* Scribbled again while events wait, and between calls. */
	submit_posted(BATCH);
	ring->head = value;
	struct io_event events[2];
	struct timespec zero = {0, 0};
	int got = io_getevents(ctx, 0, 2, events, &zero);
	CHECK(got >= 0 && got <= 2);
	for (int i = 0; i < got; i++)
		check_real(&events[i]);
	ring->head = ~value;
	CHECK(drain() <= BATCH);
}

static void head_word(void)
{
	ignored_head(moved_back_one);
	ignored_head(moved_back_far);
	ignored_head(beyond_tail);
	unsigned values[] = {nr, nr + 1, nr + 3, 2 * nr - 1, 0x7fffffff, 0x80000000, 0xffffffff};
	for (size_t v = 0; v < sizeof(values) / sizeof(values[0]); v++)
		skipping_head(values[v]);
	check_ring_usable();
	/* A full ring whose head is scribbled still empties and fills again. */
	submit_posted((int)nr - 1);
	ring->head = 0xfffffff0;
	drain();
	ring->head = (ring->head + nr - 1) % nr;
	drain();
	check_ring_usable();
}

int main(void)
{
	report_library();
	CHECK_RET(io_setup(16, &ctx), 0);
	ring = (struct aio_ring *)ctx;
	nr = ring->nr;
	CHECK(nr > 3 * BATCH && nr < 1024);
	file = temp_file(4096, 3, O_RDONLY);
	efd = eventfd(0, EFD_CLOEXEC);
	CHECK(efd >= 0);

	header_words();
	head_word();

	/* Destroyed with events waiting under a scribbled header: 0, then the handle is gone. */
	submit_posted(BATCH);
	scribble_header(0xffffffff);
	ring->head = 0xffffffff;
	CHECK_RET(io_destroy(ctx), 0);
	struct io_event event;
	struct timespec zero = {0, 0};
	CHECK_RET(io_getevents(ctx, 0, 1, &event, &zero), -EINVAL);
	close(file);
	close(efd);
	puts("ok");
	return 0;
}
