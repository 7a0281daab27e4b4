/* SPEC §2 io_submit: the order of checks, what is accepted and executed, and what a
   submitted iocb carries to its event. */
#include "check.h"
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <poll.h>

static int submit1(io_context_t ctx, struct iocb *iocb)
{
	struct iocb *list[1] = {iocb};
	return io_submit(ctx, 1, list);
}

static void prep_noop(struct iocb *iocb, int fd)
{
	memset(iocb, 0, sizeof(*iocb));
	iocb->aio_fildes = fd;
	iocb->aio_lio_opcode = 6; /* IOCB_CMD_NOOP: aioctx accepts it */
}

static void checks_in_kernel_order(io_context_t ctx, int file)
{
	struct iocb iocb;
	char buf[64];
	int wronly = open("/dev/null", O_WRONLY);
	int rdonly = open("/dev/null", O_RDONLY);
	CHECK(wronly >= 0 && rdonly >= 0);

	/* aio_reserved2, then aio_nbytes, come before the descriptor. */
	io_prep_pread(&iocb, 999, buf, sizeof(buf), 0);
	iocb.u.c.__pad3 = 1;
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);
	io_prep_pread(&iocb, 999, buf, (size_t)-1, 0);
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);

	/* A bad descriptor comes before the opcode. */
	io_prep_pread(&iocb, 999, buf, sizeof(buf), 0);
	iocb.aio_lio_opcode = 42;
	CHECK_RET(submit1(ctx, &iocb), -EBADF);
	io_prep_pread(&iocb, -1, buf, sizeof(buf), 0);
	CHECK_RET(submit1(ctx, &iocb), -EBADF);

	/* RESFD: a number that is no descriptor is EBADF, one that is no eventfd EINVAL. */
	io_prep_pread(&iocb, file, buf, sizeof(buf), 0);
	io_set_eventfd(&iocb, 999);
	CHECK_RET(submit1(ctx, &iocb), -EBADF);
	io_prep_pread(&iocb, file, buf, sizeof(buf), 0);
	io_set_eventfd(&iocb, rdonly);
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);

	/* Unknown opcode. */
	io_prep_pread(&iocb, file, buf, sizeof(buf), 0);
	iocb.aio_lio_opcode = 4; /* IOCB_CMD_PREADX was never implemented */
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);
	iocb.aio_lio_opcode = 42;
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);

	/* Reads need a readable descriptor, writes a writable one. */
	io_prep_pread(&iocb, wronly, buf, sizeof(buf), 0);
	CHECK_RET(submit1(ctx, &iocb), -EBADF);
	io_prep_pwrite(&iocb, rdonly, buf, sizeof(buf), 0);
	CHECK_RET(submit1(ctx, &iocb), -EBADF);
	/* ... even with flags aioctx does not know (EBADF before EOPNOTSUPP). */
	io_prep_pread(&iocb, wronly, buf, sizeof(buf), 0);
	iocb.aio_rw_flags = 1 << 30;
	CHECK_RET(submit1(ctx, &iocb), -EBADF);

	/* FSYNC/FDSYNC take no buffer, offset, length or flags. */
	io_prep_fsync(&iocb, file);
	iocb.u.c.buf = buf;
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);
	io_prep_fdsync(&iocb, file);
	iocb.u.c.offset = 4096;
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);
	io_prep_fsync(&iocb, file);
	iocb.u.c.nbytes = 1;
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);
	io_prep_fdsync(&iocb, file);
	iocb.aio_rw_flags = RWF_DSYNC;
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);

	/* POLL takes no offset or length, and 16 bits of events. */
	io_prep_poll(&iocb, rdonly, POLLIN);
	iocb.u.c.offset = 1;
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);
	io_prep_poll(&iocb, rdonly, POLLIN);
	iocb.u.c.nbytes = 1;
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);
	io_prep_poll(&iocb, rdonly, 0x10000 | POLLIN);
	CHECK_RET(submit1(ctx, &iocb), -EINVAL);

	/* Flags nobody knows are EOPNOTSUPP. */
	io_prep_pread(&iocb, file, buf, sizeof(buf), 0);
	iocb.aio_rw_flags = 1 << 30;
	CHECK_RET(submit1(ctx, &iocb), -EOPNOTSUPP);

	close(wronly);
	close(rdonly);
}

static void full_ring_is_eagain_before_a_bad_fd(void)
{
	io_context_t ctx = 0;
	CHECK_RET(io_setup(1, &ctx), 0);
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	struct iocb *polls = calloc(100000, sizeof(struct iocb));
	CHECK(polls != NULL);
	int accepted = 0;
	for (;;) {
		CHECK(accepted < 100000);
		io_prep_poll(&polls[accepted], pipefd[0], POLLIN);
		int ret = submit1(ctx, &polls[accepted]);
		if (ret == -EAGAIN)
			break;
		CHECK_RET(ret, 1);
		accepted++;
	}
	CHECK(accepted >= 1);
	struct iocb bad;
	io_prep_pread(&bad, 999, NULL, 0, 0);
	CHECK_RET(submit1(ctx, &bad), -EAGAIN);
	/* Destroy cancels the polls that would never fire. */
	CHECK_RET(io_destroy(ctx), 0);
	free(polls);
	close(pipefd[0]);
	close(pipefd[1]);
}

static void batch_counts_and_clamps(io_context_t ctx, int file)
{
	/* nr < 0, unknown ctx, nr == 0. */
	struct iocb noop;
	struct iocb *list[1] = {&noop};
	prep_noop(&noop, file);
	CHECK_RET(io_submit(ctx, -1, list), -EINVAL);
	CHECK_RET(io_submit((io_context_t)0x1000, 1, list), -EINVAL);
	CHECK_RET(io_submit((io_context_t)0x1000, 0, list), -EINVAL);
	CHECK_RET(io_submit(ctx, 0, list), 0);

	/* A later failure stops the batch: the count before it; the rest never runs. */
	char zeros[16] = {0};
	struct iocb ok, bad, write;
	prep_noop(&ok, file);
	io_prep_pread(&bad, 999, zeros, sizeof(zeros), 0);
	io_prep_pwrite(&write, file, zeros, sizeof(zeros), 0);
	struct iocb *batch[3] = {&ok, &bad, &write};
	CHECK_RET(io_submit(ctx, 3, batch), 1);
	struct io_event event;
	reap(ctx, 1, &event);
	CHECK(event.obj == &ok && event.res == 0);
	unsigned char first;
	CHECK(pread(file, &first, 1, 0) == 1 && first == file_byte(0, 3));

	/* nr beyond the ring is clamped to it. */
	io_context_t small = 0;
	CHECK_RET(io_setup(1, &small), 0);
	unsigned ring_nr = ((unsigned *)small)[1];
	int many = 5000;
	CHECK((unsigned)many > ring_nr);
	struct iocb *noops = calloc(many, sizeof(struct iocb));
	struct iocb **ptrs = calloc(many, sizeof(struct iocb *));
	for (int i = 0; i < many; i++) {
		prep_noop(&noops[i], file);
		ptrs[i] = &noops[i];
	}
	errno = 4242;
	int ret = io_submit(small, many, ptrs);
	CHECK(errno == 4242);
	CHECK(ret >= 1 && (unsigned)ret <= ring_nr);
	struct io_event *events = calloc(ret, sizeof(struct io_event));
	reap(small, ret, events);
	CHECK_RET(io_destroy(small), 0);
	free(events);
	free(noops);
	free(ptrs);
}

static void iocb_is_copied_and_keyed(io_context_t ctx, int file)
{
	char buf[100];
	struct iocb iocb;
	io_prep_pread(&iocb, file, buf, sizeof(buf), 10);
	iocb.data = (void *)0xfeedbeefUL;
	iocb.key = 77;
	CHECK_RET(submit1(ctx, &iocb), 1);
	CHECK(iocb.key == 0);
	memset(&iocb, 0xff, sizeof(iocb)); /* the caller may reuse the iocb at once */
	struct io_event event;
	reap(ctx, 1, &event);
	CHECK(event.obj == &iocb);
	CHECK(event.data == (void *)0xfeedbeefUL);
	CHECK(event.res == 100 && event.res2 == 0);
	for (int i = 0; i < 100; i++)
		CHECK((unsigned char)buf[i] == file_byte(10 + i, 3));
}

static void fd_is_resolved_at_submit(io_context_t ctx)
{
	int pipefd[2];
	CHECK(pipe(pipefd) == 0);
	char buf[8] = {0};
	struct iocb iocb;
	/* Kernel AIO would block here until data arrives; aioctx returns at once. */
	io_prep_pread(&iocb, pipefd[0], buf, sizeof(buf), 0);
	CHECK_RET(submit1(ctx, &iocb), 1);
	/* The number is closed and reused for another file: the request keeps the pipe. */
	int other = open("/dev/zero", O_RDONLY);
	CHECK(dup2(other, pipefd[0]) == pipefd[0]);
	close(other);
	CHECK(write(pipefd[1], "xyz", 3) == 3);
	struct io_event event;
	reap(ctx, 1, &event);
	CHECK(event.res == 3 && memcmp(buf, "xyz", 3) == 0);
	close(pipefd[0]);
	close(pipefd[1]);
}

static void every_opcode_runs(io_context_t ctx, int file)
{
	char *a = aligned(4096), *b = aligned(4096);
	memset(a, 'a', 4096);
	memset(b, 'b', 4096);
	struct iovec out[2] = {{a, 100}, {b, 50}};
	struct iocb iocbs[7];
	io_prep_pwrite(&iocbs[0], file, a, 4096, 8192);
	io_prep_pwritev(&iocbs[1], file, out, 2, 16384);
	io_prep_fsync(&iocbs[2], file);
	io_prep_fdsync(&iocbs[3], file);
	int efd = eventfd(1, 0);
	io_prep_poll(&iocbs[4], efd, POLLIN);
	prep_noop(&iocbs[5], file);
	for (int i = 0; i < 6; i++) {
		iocbs[i].data = (void *)(uintptr_t)(i + 1);
		/* one at a time: writes before the syncs and reads that check them */
		CHECK_RET(submit1(ctx, &iocbs[i]), 1);
		struct io_event event;
		reap(ctx, 1, &event);
		CHECK(event.data == (void *)(uintptr_t)(i + 1));
		long want[] = {4096, 150, 0, 0, POLLIN, 0};
		CHECK((event.res & want[i]) == want[i]);
		CHECK(i == 4 || event.res == want[i]);
	}
	char *c = aligned(4096), *d = aligned(4096);
	struct iovec in[2] = {{c, 100}, {d, 50}};
	io_prep_preadv(&iocbs[6], file, in, 2, 16384);
	CHECK_RET(submit1(ctx, &iocbs[6]), 1);
	memset(in, 0, sizeof(in)); /* the iovec array was copied at submit */
	struct io_event event;
	reap(ctx, 1, &event);
	CHECK(event.res == 150);
	CHECK(memcmp(c, a, 100) == 0 && memcmp(d, b, 50) == 0);
	/* A short read is not an error: the bytes that were there. */
	struct stat st;
	CHECK(fstat(file, &st) == 0);
	io_prep_pread(&iocbs[6], file, c, 4096, st.st_size - 10);
	CHECK_RET(submit1(ctx, &iocbs[6]), 1);
	reap(ctx, 1, &event);
	CHECK(event.res == 10);
	close(efd);
	free(a), free(b), free(c), free(d);
}

int main(void)
{
	report_library();
	io_context_t ctx = 0;
	CHECK_RET(io_setup(64, &ctx), 0);
	int file = temp_file(1 << 20, 3, O_RDWR);
	checks_in_kernel_order(ctx, file);
	full_ring_is_eagain_before_a_bad_fd();
	batch_counts_and_clamps(ctx, file);
	iocb_is_copied_and_keyed(ctx, file);
	fd_is_resolved_at_submit(ctx);
	every_opcode_runs(ctx, file);
	CHECK_RET(io_destroy(ctx), 0);
	close(file);
	puts("ok");
	return 0;
}
