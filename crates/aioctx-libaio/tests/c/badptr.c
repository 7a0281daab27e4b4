/* SPEC §2: every pointer a call takes may be NULL, -1, a kernel address, unmapped or
   read-only; each is -EFAULT (or, for a handle, -EINVAL), never a crash, and nothing is
   lost to it. */
#include "check.h"
#include <sys/uio.h>

int main(void)
{
	report_library();
	void *bad[] = {NULL, MINUS_ONE, KERNEL_ADDR, unmapped_page()};
	void *bad_nonnull[] = {MINUS_ONE, KERNEL_ADDR, unmapped_page()};
	io_context_t ctx = 0;
	CHECK_RET(io_setup(8, &ctx), 0);
	int file = temp_file(8192, 8, O_RDWR);
	struct io_event events[4];
	struct timespec zero = {0, 0};
	char buf[64];

	/* The iocb array and its elements. */
	for (int i = 0; i < 4; i++) {
		CHECK_RET(io_submit(ctx, 1, bad[i]), -EFAULT);
		struct iocb *list[1] = {bad[i]};
		CHECK_RET(io_submit(ctx, 1, list), -EFAULT);
	}
	struct iocb good;
	io_prep_pread(&good, file, buf, sizeof(buf), 0);
	struct iocb *partly[2] = {&good, NULL};
	CHECK_RET(io_submit(ctx, 2, partly), 1);
	reap(ctx, 1, events);

	/* An iocb that cannot take its key back (read-only) is EFAULT. */
	struct iocb *ro = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(ro != MAP_FAILED);
	io_prep_pread(ro, file, buf, sizeof(buf), 0);
	CHECK(mprotect(ro, 4096, PROT_READ) == 0);
	struct iocb *rolist[1] = {ro};
	CHECK_RET(io_submit(ctx, 1, rolist), -EFAULT);

	/* Buffers: a kernel address is EFAULT at submit; an unmapped user page fails the
	   request with -EFAULT in its event. Same for iovec arrays and their segments. */
	struct iocb iocb;
	struct iocb *list[1] = {&iocb};
	io_prep_pread(&iocb, file, KERNEL_ADDR, 64, 0);
	CHECK_RET(io_submit(ctx, 1, list), -EFAULT);
	io_prep_pread(&iocb, file, unmapped_page(), 64, 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap(ctx, 1, events);
	CHECK(events[0].res == -EFAULT);
	io_prep_pwrite(&iocb, file, unmapped_page(), 64, 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap(ctx, 1, events);
	CHECK(events[0].res == -EFAULT);
	for (int i = 0; i < 4; i++) {
		io_prep_preadv(&iocb, file, bad[i], 1, 0);
		CHECK_RET(io_submit(ctx, 1, list), -EFAULT);
	}
	struct iovec iov = {KERNEL_ADDR, 64};
	io_prep_preadv(&iocb, file, &iov, 1, 0);
	CHECK_RET(io_submit(ctx, 1, list), -EFAULT);

	/* Event arrays: EFAULT, and the event is still there for a good array. */
	struct iocb noop;
	memset(&noop, 0, sizeof(noop));
	noop.aio_fildes = file;
	noop.aio_lio_opcode = 6;
	list[0] = &noop;
	CHECK_RET(io_submit(ctx, 1, list), 1);
	struct timespec second = {1, 0};
	for (int i = 0; i < 4; i++)
		CHECK_RET(io_getevents(ctx, 1, 1, bad[i], &second), -EFAULT);
	CHECK_RET(io_getevents(ctx, 1, 1, readonly_page(), &second), -EFAULT);
	CHECK_RET(io_getevents(ctx, 1, 1, events, &second), 1);
	CHECK(events[0].obj == &noop);

	/* Timeouts and signal masks (NULL means none for both). */
	for (int i = 0; i < 3; i++) {
		CHECK_RET(io_getevents(ctx, 0, 1, events, bad_nonnull[i]), -EFAULT);
		CHECK_RET(io_pgetevents(ctx, 0, 1, events, bad_nonnull[i], NULL), -EFAULT);
		CHECK_RET(io_pgetevents(ctx, 0, 1, events, &zero, bad_nonnull[i]), -EFAULT);
	}

	/* io_cancel's iocb. */
	for (int i = 0; i < 4; i++)
		CHECK_RET(io_cancel(ctx, bad[i], events), -EFAULT);

	/* Handles that were never returned by io_setup are looked up, never dereferenced. */
	int on_stack;
	void *forged[] = {NULL, MINUS_ONE, KERNEL_ADDR, unmapped_page(), &on_stack, buf,
			  (char *)ctx + 32, readonly_page()};
	for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
		io_context_t h = forged[i];
		list[0] = &noop;
		CHECK_RET(io_submit(h, 1, list), -EINVAL);
		CHECK_RET(io_getevents(h, 0, 1, events, &zero), -EINVAL);
		CHECK_RET(io_cancel(h, &noop, events), -EINVAL);
		CHECK_RET(io_destroy(h), -EINVAL);
	}

	CHECK_RET(io_destroy(ctx), 0);
	puts("ok");
	return 0;
}
