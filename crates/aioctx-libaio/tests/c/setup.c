/* SPEC §2 io_setup and io_queue_init: the kernel's order of checks, and the ring a handle
   points at. */
#include "check.h"

struct aio_ring {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
	struct io_event events[];
};

static long aio_max_nr(void)
{
	FILE *f = fopen("/proc/sys/fs/aio-max-nr", "r");
	long value = 65536;
	if (f) {
		CHECK(fscanf(f, "%ld", &value) == 1);
		fclose(f);
	}
	return value;
}

int main(void)
{
	report_library();
	io_context_t ctx = 0;

	/* An unusable ctxp is EFAULT before anything else, even when nr_events is bad too. */
	CHECK_RET(io_setup(1, NULL), -EFAULT);
	CHECK_RET(io_setup(0, NULL), -EFAULT);
	CHECK_RET(io_setup(1, MINUS_ONE), -EFAULT);
	CHECK_RET(io_setup(1, KERNEL_ADDR), -EFAULT);
	CHECK_RET(io_setup(1, unmapped_page()), -EFAULT);
	CHECK_RET(io_setup(1, readonly_page()), -EFAULT);
	CHECK_RET(io_setup(0, readonly_page()), -EFAULT);

	/* Then *ctxp != 0 or nr_events == 0. */
	ctx = (io_context_t)0x1234;
	CHECK_RET(io_setup(1, &ctx), -EINVAL);
	CHECK(ctx == (io_context_t)0x1234);
	ctx = 0;
	CHECK_RET(io_setup(0, &ctx), -EINVAL);

	/* Then sizes that would overflow, negative ones seen as unsigned. */
	CHECK_RET(io_setup(0x10000000 / 32 + 1, &ctx), -EINVAL);
	CHECK_RET(io_setup(-1, &ctx), -EINVAL);

	/* Then more events in one context than aio-max-nr. */
	long max_nr = aio_max_nr();
	if (max_nr < 0x10000000 / 32)
		CHECK_RET(io_setup((int)max_nr + 1, &ctx), -EAGAIN);
	CHECK(ctx == 0);

	/* Contexts do not share aio-max-nr: several whose sizes add up to more succeed. */
	io_context_t big[3] = {0, 0, 0};
	int each = (int)(max_nr / 2 + 1);
	for (int i = 0; i < 3; i++)
		CHECK_RET(io_setup(each, &big[i]), 0);
	for (int i = 0; i < 3; i++)
		CHECK_RET(io_destroy(big[i]), 0);

	/* The handle is the ring: the kernel's aio_ring header, at least nr_events slots. */
	CHECK_RET(io_setup(100, &ctx), 0);
	CHECK(ctx != 0);
	struct aio_ring *ring = (struct aio_ring *)ctx;
	CHECK(ring->magic == 0xa10a10a1);
	CHECK(ring->compat_features == 1);
	CHECK(ring->incompat_features == 0);
	CHECK(ring->header_length == 32);
	CHECK(ring->nr >= 100);
	CHECK(ring->head == 0 && ring->tail == 0);
	CHECK_RET(io_destroy(ctx), 0);

	/* io_queue_init: maxevents <= 0 is EINVAL; otherwise it clears *ctxp and sets up. */
	ctx = 0;
	CHECK_RET(io_queue_init(0, &ctx), -EINVAL);
	CHECK_RET(io_queue_init(-5, &ctx), -EINVAL);
	ctx = (io_context_t)0x5678;
	CHECK_RET(io_queue_init(8, &ctx), 0);
	CHECK(ctx != (io_context_t)0x5678 && ctx != 0);
	CHECK(((struct aio_ring *)ctx)->magic == 0xa10a10a1);
	CHECK_RET(io_queue_release(ctx), 0);
	CHECK_RET(io_queue_init(8, NULL), -EFAULT);

	puts("ok");
	return 0;
}
