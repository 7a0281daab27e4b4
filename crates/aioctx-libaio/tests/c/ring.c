/* SPEC §2: a program may reap the ring itself, as QEMU's native AIO does: read nr, head,
   tail and the events at the handle, write head, and wait on the requests' eventfd,
   never calling io_getevents. Slots it frees by moving head are used again. */
#include "check.h"
#include <sys/eventfd.h>

struct aio_ring {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
	struct io_event io_events[];
};

#define TOTAL 3000
#define DEPTH 48

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_setup(64, &ctx), 0);
	struct aio_ring *ring = (struct aio_ring *)ctx;
	CHECK(ring->magic == 0xa10a10a1 && ring->header_length == 32);
	CHECK((unsigned)TOTAL > 3 * ring->nr);
	int efd = eventfd(0, EFD_CLOEXEC);
	int file = temp_file(1 << 20, 4, O_RDONLY);
	static struct iocb iocbs[TOTAL];
	static char bufs[DEPTH][64];
	int slot_of[TOTAL];
	int free_slots[DEPTH], nfree = DEPTH;
	for (int i = 0; i < DEPTH; i++)
		free_slots[i] = i;
	int submitted = 0, done = 0;
	while (done < TOTAL) {
		while (submitted < TOTAL && nfree > 0) {
			int slot = free_slots[--nfree];
			struct iocb *iocb = &iocbs[submitted];
			long long offset = (long long)(submitted % 16384) * 64;
			io_prep_pread(iocb, file, bufs[slot], 64, offset);
			io_set_eventfd(iocb, efd);
			iocb->data = (void *)(uintptr_t)submitted;
			slot_of[submitted] = slot;
			struct iocb *list[1] = {iocb};
			CHECK_RET(io_submit(ctx, 1, list), 1);
			submitted++;
		}
		uint64_t ready;
		CHECK(read(efd, &ready, sizeof(ready)) == sizeof(ready));
		unsigned head = ring->head;
		unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
		CHECK(head < ring->nr && tail < ring->nr);
		while (head != tail) {
			struct io_event *event = &ring->io_events[head];
			int index = (int)(uintptr_t)event->data;
			CHECK(index >= 0 && index < submitted);
			CHECK(event->obj == &iocbs[index] && event->res == 64);
			long long offset = (long long)(index % 16384) * 64;
			CHECK((unsigned char)bufs[slot_of[index]][7] == file_byte(offset + 7, 4));
			free_slots[nfree++] = slot_of[index];
			done++;
			head = (head + 1) % ring->nr;
		}
		__atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
	}
	CHECK_RET(io_destroy(ctx), 0);
	puts("ok");
	return 0;
}
