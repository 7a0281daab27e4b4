/* SPEC §2: a ring moved with mremap keeps working at its new address, as on the kernel
   (checkpoint/restore tools move it): submit, reap and destroy work there, also with a
   request in flight across the move, and the old address names nothing. */
#include "check.h"

struct aio_ring {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
	struct io_event events[];
};

/* The length of the mapping that starts at `addr`, from /proc/self/maps (as a
   checkpoint/restore tool finds it). */
static size_t mapping_length(void *addr)
{
	FILE *maps = fopen("/proc/self/maps", "r");
	CHECK(maps != NULL);
	unsigned long start, end;
	char line[512];
	size_t len = 0;
	while (fgets(line, sizeof(line), maps))
		if (sscanf(line, "%lx-%lx", &start, &end) == 2 && start == (unsigned long)addr)
			len = end - start;
	fclose(maps);
	CHECK(len > 0);
	return len;
}

/* Moves the ring to a fresh address; returns the new handle. */
static io_context_t move_ring(io_context_t ctx)
{
	size_t len = mapping_length(ctx);
	void *hole = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(hole != MAP_FAILED);
	void *moved = mremap(ctx, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, hole);
	CHECK(moved == hole);
	return (io_context_t)moved;
}

int main(void)
{
	report_library();
	struct timespec five = {5, 0};
	io_context_t setup = 0;
	CHECK_RET(io_setup(32, &setup), 0);
	int file = temp_file(8192, 9, O_RDONLY);
	char buf[64];
	struct iocb iocb;
	struct iocb *list[1] = {&iocb};
	struct io_event event;

	/* Moved between setup and submit. */
	io_context_t ctx = move_ring(setup);
	CHECK(ctx != setup);
	io_prep_pread(&iocb, file, buf, sizeof(buf), 0);
	CHECK_RET(io_submit(setup, 1, list), -EINVAL);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	CHECK_RET(io_getevents(ctx, 1, 1, &event, &five), 1);
	CHECK(event.res == sizeof(buf) && event.obj == &iocb);
	struct aio_ring *ring = (struct aio_ring *)ctx;
	CHECK(ring->magic == 0xa10a10a1 && ring->head == ring->tail);

	/* Moved between submit and reap, with a pipe read in flight. */
	int fds[2];
	CHECK(pipe(fds) == 0);
	io_prep_pread(&iocb, fds[0], buf, sizeof(buf), 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	io_context_t again = move_ring(ctx);
	CHECK(write(fds[1], "moved", 5) == 5);
	/* The event lands in the ring at its new address, reaped there in user space. */
	ring = (struct aio_ring *)again;
	for (int waited = 0; ring->head == ring->tail && waited < 5000; waited++)
		usleep(1000);
	CHECK(ring->head != ring->tail);
	CHECK(ring->events[ring->head].res == 5 && ring->events[ring->head].obj == &iocb);
	ring->head = (ring->head + 1) % ring->nr;
	struct timespec zero = {0, 0};
	CHECK_RET(io_getevents(again, 0, 1, &event, &zero), 0);

	/* Reaped through io_getevents at the new address, too. */
	io_prep_pread(&iocb, file, buf, sizeof(buf), 64);
	CHECK_RET(io_submit(again, 1, list), 1);
	CHECK_RET(io_getevents(again, 1, 1, &event, &five), 1);
	CHECK(event.res == sizeof(buf));

	CHECK_RET(io_destroy(ctx), -EINVAL);
	CHECK_RET(io_destroy(again), 0);
	/* Destroy unmapped the ring where it was. */
	CHECK(msync(again, 4096, MS_ASYNC) == -1 && errno == ENOMEM);
	return 0;
}
