/* The fast paths of io_submit keep the kernel's answers: a batch stops at its first
   unreadable iocb pointer (the ones before it run), also when the pointer array itself
   runs into an unmapped page; aio_key is reset to 0 whatever it held; and a request keeps
   the file its fd named at submit when the caller closes the number and reuses it while
   the request is in flight, also when the number names another file at the next submit.
   With the argument deny-kcmp, the same run under `seccomp_exec eperm-kcmp`
   (crates/aioctx/tests/c), whose filter answers kcmp with EPERM, as Docker's default
   profile does (the drop-in's memory of fd copies must then never take a copy for a
   number that names another file). */
#include "check.h"
#include <sys/eventfd.h>
#include <sys/syscall.h>

static struct timespec five = {5, 0};

/* A batch of 8 whose 5th pointer is unreadable: 4 accepted, and they complete. */
static void fifth_pointer_bad(io_context_t ctx, int file)
{
	static char bufs[8][64];
	struct iocb iocbs[8];
	struct iocb *list[8];
	for (int i = 0; i < 8; i++) {
		io_prep_pread(&iocbs[i], file, bufs[i], 64, i * 64);
		list[i] = &iocbs[i];
	}
	list[4] = unmapped_page();
	CHECK_RET(io_submit(ctx, 8, list), 4);
	struct io_event events[8];
	reap(ctx, 4, events);
	for (int i = 0; i < 4; i++)
		CHECK(events[i].res == 64);
	struct timespec zero = {0, 0};
	CHECK_RET(io_getevents(ctx, 0, 8, events, &zero), 0);

	/* The first one bad: its error. */
	list[0] = unmapped_page();
	CHECK_RET(io_submit(ctx, 8, list), -EFAULT);
}

/* A writable page followed by an unmapped one (released with munmap(page, 4096)). */
static char *page_before_hole(void)
{
	char *pages = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(pages != MAP_FAILED);
	CHECK(munmap(pages + 4096, 4096) == 0);
	return pages;
}

/* An iocb pointer array whose last pointers lie on an unmapped page: the ones before the
   page boundary are submitted. */
static void array_straddles_unmapped_page(io_context_t ctx, int file)
{
	char *pages = page_before_hole();
	struct iocb **list = (struct iocb **)(pages + 4096) - 3;
	static struct iocb iocbs[3];
	static char bufs[3][64];
	for (int i = 0; i < 3; i++) {
		io_prep_pread(&iocbs[i], file, bufs[i], 64, 0);
		list[i] = &iocbs[i];
	}
	CHECK_RET(io_submit(ctx, 6, list), 3);
	struct io_event events[3];
	reap(ctx, 3, events);
	CHECK_RET(io_submit(ctx, 2, (struct iocb **)(pages + 4096)), -EFAULT);
	munmap(pages, 4096);
}

/* Batches longer than the library reads at once (64 pointers): one runs whole, one whose
   67th pointer is unreadable stops there, and one whose array runs into an unmapped page
   after 70 pointers stops at the page. */
static void long_batches(int file)
{
	enum { N = 100 };
	io_context_t ctx = 0;
	CHECK_RET(io_setup(128, &ctx), 0);
	static struct iocb iocbs[N];
	static char bufs[N][64];
	struct iocb *list[N];
	struct io_event events[N];
	for (int i = 0; i < N; i++) {
		io_prep_pread(&iocbs[i], file, bufs[i], 64, i * 64);
		iocbs[i].data = &bufs[i];
		list[i] = &iocbs[i];
	}
	CHECK_RET(io_submit(ctx, N, list), N);
	reap(ctx, N, events);
	int seen[N] = {0};
	for (int i = 0; i < N; i++) {
		int which = (int)((char(*)[64])events[i].data - bufs);
		CHECK(events[i].res == 64 && which >= 0 && which < N && !seen[which]);
		seen[which] = 1;
		CHECK((unsigned char)bufs[which][1] == file_byte(which * 64 + 1, 5));
	}
	list[66] = unmapped_page();
	CHECK_RET(io_submit(ctx, N, list), 66);
	reap(ctx, 66, events);
	list[66] = &iocbs[66];

	char *pages = page_before_hole();
	struct iocb **at = (struct iocb **)(pages + 4096) - 70;
	memcpy(at, list, 70 * sizeof(*list));
	CHECK_RET(io_submit(ctx, N, at), 70);
	reap(ctx, 70, events);
	struct timespec zero = {0, 0};
	CHECK_RET(io_getevents(ctx, 0, N, events, &zero), 0);
	munmap(pages, 4096);
	CHECK_RET(io_destroy(ctx), 0);
}

/* aio_key is KIOCB_KEY (0) after submit, whatever it held. */
static void key_reset(io_context_t ctx, int file)
{
	char buf[64];
	struct iocb iocb;
	struct iocb *list[1] = {&iocb};
	io_prep_pread(&iocb, file, buf, sizeof(buf), 0);
	iocb.key = 0x1234;
	CHECK_RET(io_submit(ctx, 1, list), 1);
	CHECK(iocb.key == 0);
	struct io_event event;
	reap(ctx, 1, &event);
	CHECK(event.res == sizeof(buf));
}

/* A read of a pipe is in flight when the caller closes its fd and makes the number name
   another pipe; the read still takes its data from the first pipe. */
static void fd_reused_while_in_flight(io_context_t ctx)
{
	int first[2], second[2];
	CHECK(pipe(first) == 0 && pipe(second) == 0);
	char buf[8] = {0};
	struct iocb iocb;
	struct iocb *list[1] = {&iocb};
	io_prep_pread(&iocb, first[0], buf, sizeof(buf), 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	int number = first[0];
	CHECK(close(number) == 0);
	CHECK(dup2(second[0], number) == number);
	CHECK(write(second[1], "second", 6) == 6);
	CHECK(write(first[1], "first", 5) == 5);
	struct io_event event;
	CHECK_RET(io_getevents(ctx, 1, 1, &event, &five), 1);
	CHECK(event.res == 5 && memcmp(buf, "first", 5) == 0);
	/* The second pipe's data was left alone. */
	char left[8];
	CHECK(read(number, left, sizeof(left)) == 6);
	close(number);
	close(second[0]);
	close(second[1]);
	close(first[1]);
}

/* The same for reads of a file with O_DIRECT (the kernel or a worker runs them): they read
   the file the number named at submit, even if they complete after the number was reused
   (on io_uring they take no copy of the fd: the kernel resolved the number at submit). The
   file's pages are dirty, so the kernel writes them back before it reads: the reads are
   still in flight when the number is reused. */
static void direct_fd_reused(io_context_t ctx)
{
	enum { READS = 16, BLOCK = 4096 };
	int original = temp_file(READS * BLOCK, 3, O_RDONLY | O_DIRECT);
	int other = temp_file(READS * BLOCK, 4, O_RDONLY | O_DIRECT);
	dirty_pages(original, READS * BLOCK, 11);
	unsigned char *buf = aligned(READS * BLOCK);
	struct iocb iocbs[READS];
	struct iocb *list[READS];
	for (int i = 0; i < READS; i++) {
		io_prep_pread(&iocbs[i], original, buf + i * BLOCK, BLOCK, (long long)i * BLOCK);
		list[i] = &iocbs[i];
	}
	CHECK_RET(io_submit(ctx, READS, list), READS);
	CHECK(dup2(other, original) == original);
	struct io_event events[READS];
	reap(ctx, READS, events);
	for (int i = 0; i < READS; i++)
		CHECK(events[i].res == BLOCK);
	for (size_t i = 0; i < READS * BLOCK; i++)
		CHECK(buf[i] == file_byte(i, 11));
	free(buf);
	close(original);
	close(other);
}

/* The same for a cold buffered read (evicted from the page cache, so it cannot complete
   inside io_submit and goes asynchronous on every engine). */
static void cold_fd_reused(io_context_t ctx)
{
	int original = temp_file(65536, 7, O_RDONLY);
	int other = temp_file(65536, 8, O_RDONLY);
	CHECK(posix_fadvise(original, 0, 0, POSIX_FADV_DONTNEED) == 0);
	unsigned char *buf = aligned(65536);
	struct iocb iocb;
	struct iocb *list[1] = {&iocb};
	io_prep_pread(&iocb, original, buf, 65536, 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	CHECK(dup2(other, original) == original);
	struct io_event event;
	CHECK_RET(io_getevents(ctx, 1, 1, &event, &five), 1);
	CHECK(event.res == 65536);
	for (size_t i = 0; i < 65536; i++)
		CHECK(buf[i] == file_byte(i, 7));
	free(buf);
	close(original);
	close(other);
}

/* A read of a file with O_DIRECT is in flight (holding a copy of the fd where a worker
   runs it) when the caller makes the number name another file and submits a second read
   on it: the second reads the other file, the first the original. */
static void number_reused_between_submits(io_context_t ctx)
{
	int original = temp_file(65536, 9, O_RDONLY | O_DIRECT);
	int other = temp_file(65536, 10, O_RDONLY | O_DIRECT);
	unsigned char *bufs[2] = {aligned(65536), aligned(65536)};
	struct iocb iocbs[2];
	struct iocb *list[2] = {&iocbs[0], &iocbs[1]};
	io_prep_pread(&iocbs[0], original, bufs[0], 65536, 0);
	CHECK_RET(io_submit(ctx, 1, &list[0]), 1);
	CHECK(dup2(other, original) == original);
	io_prep_pread(&iocbs[1], original, bufs[1], 65536, 0);
	CHECK_RET(io_submit(ctx, 1, &list[1]), 1);
	struct io_event events[2];
	CHECK_RET(io_getevents(ctx, 2, 2, events, &five), 2);
	for (int e = 0; e < 2; e++) {
		CHECK(events[e].res == 65536);
		int which = events[e].obj == &iocbs[0] ? 0 : 1;
		for (size_t i = 0; i < 65536; i++)
			CHECK(bufs[which][i] == file_byte(i, which == 0 ? 9 : 10));
	}
	free(bufs[0]);
	free(bufs[1]);
	close(original);
	close(other);
}

/* Reads `len` bytes at `offset` of `fd` through the context and returns the event's res,
   or submit's own error - 100000 (told apart). */
static long read_at(io_context_t ctx, int fd, void *buf, size_t len, off_t offset)
{
	struct iocb iocb;
	struct iocb *list[1] = {&iocb};
	io_prep_pread(&iocb, fd, buf, len, offset);
	long ret = io_submit(ctx, 1, list);
	if (ret != 1)
		return ret == 0 ? -9999 : ret - 100000;
	struct io_event event;
	reap(ctx, 1, &event);
	return (long)event.res;
}

/* The first 64 bytes of `fd`, as read_at. */
static long read_64(io_context_t ctx, int fd, void *buf)
{
	return read_at(ctx, fd, buf, 64, 0);
}

/* Makes `number` name the file `fd` names, as a caller reusing a number does (`fd` is
   closed). */
static void under_number(int fd, int number)
{
	CHECK(dup2(fd, number) == number);
	close(fd);
}

/* A number the drop-in has seen name a buffered file (so a read on it may skip asking the
   kernel what the number names) is reused between submits for other kinds of file; each
   answer is the kernel's for the file the number names at the submit. */
static void remembered_number_reused(io_context_t ctx)
{
	unsigned char buf[64];
	int number = temp_file(8192, 11, O_RDWR);
	CHECK(read_64(ctx, number, buf) == 64 && buf[1] == file_byte(1, 11));

	/* Another buffered file: its bytes. */
	int other = temp_file(8192, 12, O_RDONLY);
	under_number(other, number);
	CHECK(read_64(ctx, number, buf) == 64 && buf[1] == file_byte(1, 12));

	/* A pipe with data: the pipe's bytes (a stream: the offset is not a position). */
	int p[2];
	CHECK(pipe(p) == 0);
	CHECK(write(p[1], "piped", 5) == 5);
	under_number(p[0], number);
	CHECK(read_64(ctx, number, buf) == 5 && memcmp(buf, "piped", 5) == 0);
	/* The same pipe empty: the drop-in's submit does not wait (the kernel's blocks until
	   data comes, so this part runs on the drop-in only), the read completes later. */
	struct iocb iocb;
	struct iocb *list[1] = {&iocb};
	struct io_event event;
	if (getenv("AIOCTX_ENGINE") != NULL) {
		io_prep_pread(&iocb, number, buf, 64, 0);
		CHECK_RET(io_submit(ctx, 1, list), 1);
		struct timespec zero = {0, 0};
		CHECK_RET(io_getevents(ctx, 0, 1, &event, &zero), 0);
		CHECK(write(p[1], "later", 5) == 5);
		reap(ctx, 1, &event);
		CHECK(event.res == 5 && memcmp(buf, "later", 5) == 0);
		/* Seen as a file again, then an empty pipe under the number: two reads wait on
		   it (the second submitted while the first holds its copy of the pipe), and
		   each takes one write. */
		int again = temp_file(8192, 18, O_RDONLY);
		under_number(again, number);
		CHECK(read_64(ctx, number, buf) == 64 && buf[1] == file_byte(1, 18));
		int q[2];
		CHECK(pipe(q) == 0);
		under_number(q[0], number);
		static char firsts[2][64];
		struct iocb waiting[2];
		struct iocb *one[1];
		for (int i = 0; i < 2; i++) {
			io_prep_pread(&waiting[i], number, firsts[i], 64, 0);
			one[0] = &waiting[i];
			CHECK_RET(io_submit(ctx, 1, one), 1);
		}
		CHECK_RET(io_getevents(ctx, 0, 1, &event, &zero), 0);
		struct io_event got[2];
		CHECK(write(q[1], "one", 3) == 3);
		reap(ctx, 1, &got[0]);
		CHECK(write(q[1], "two", 3) == 3);
		reap(ctx, 1, &got[1]);
		CHECK(got[0].res == 3 && got[1].res == 3);
		char *a = ((struct iocb *)got[0].obj)->u.c.buf, *b = ((struct iocb *)got[1].obj)->u.c.buf;
		CHECK(memcmp(a, "one", 3) == 0 && memcmp(b, "two", 3) == 0);
		close(q[1]);
	}
	close(p[1]);

	/* Back to a buffered file, then a write-only one: a read is EBADF, a write lands. */
	other = temp_file(8192, 13, O_RDONLY);
	under_number(other, number);
	CHECK(read_64(ctx, number, buf) == 64 && buf[1] == file_byte(1, 13));
	other = temp_file(8192, 14, O_WRONLY);
	under_number(other, number);
	CHECK(read_64(ctx, number, buf) == -EBADF - 100000);
	memset(buf, 0x5a, sizeof(buf));
	io_prep_pwrite(&iocb, number, buf, 64, 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap(ctx, 1, &event);
	CHECK(event.res == 64);
	unsigned char back[64];
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", number);
	int reader = open(path, O_RDONLY);
	CHECK(reader >= 0);
	CHECK(pread(reader, back, 64, 0) == 64 && back[0] == 0x5a && back[63] == 0x5a);
	close(reader);

	/* The write-only file seen, then a read-write one: a read works again. */
	other = temp_file(8192, 15, O_RDWR);
	under_number(other, number);
	CHECK(read_64(ctx, number, buf) == 64 && buf[1] == file_byte(1, 15));

	/* An eventfd (read-write, not seekable): an 8-byte read takes its count. */
	int efd = eventfd(3, 0);
	CHECK(efd >= 0);
	under_number(efd, number);
	uint64_t count = 0;
	io_prep_pread(&iocb, number, &count, 8, 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap(ctx, 1, &event);
	CHECK(event.res == 8 && count == 3);

	/* A directory: submit refuses it as the kernel does. */
	other = temp_file(8192, 16, O_RDWR);
	under_number(other, number);
	CHECK(read_64(ctx, number, buf) == 64);
	int dir = open("/tmp", O_RDONLY | O_DIRECTORY);
	CHECK(dir >= 0);
	under_number(dir, number);
	CHECK(read_64(ctx, number, buf) == -EINVAL - 100000);

	/* Closed: EBADF, before a resfd that is no eventfd (EINVAL) is looked at. */
	other = temp_file(8192, 17, O_RDWR);
	CHECK(dup2(other, number) == number);
	CHECK(read_64(ctx, number, buf) == 64);
	CHECK(close(number) == 0);
	io_prep_pread(&iocb, number, buf, 64, 0);
	io_set_eventfd(&iocb, other);
	CHECK_RET(io_submit(ctx, 1, list), -EBADF);

	/* O_DIRECT switched on under the number (fcntl): an aligned read reads the file, and
	   an unaligned one gets what a plain pread of the same gets (EINVAL where the device
	   needs alignment), in its event. */
	under_number(other, number);
	CHECK(read_64(ctx, number, buf) == 64 && buf[1] == file_byte(1, 17));
	CHECK(fcntl(number, F_SETFL, fcntl(number, F_GETFL) | O_DIRECT) == 0);
	unsigned char *page = aligned(4096);
	io_prep_pread(&iocb, number, page, 4096, 4096);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap(ctx, 1, &event);
	CHECK(event.res == 4096 && page[1] == file_byte(4097, 17));
	long plain = pread(number, page + 1, 512, 0);
	if (plain < 0)
		plain = -errno;
	const char *engine = getenv("AIOCTX_ENGINE");
	if (engine != NULL && strcmp(engine, "sim") == 0)
		plain = -EINVAL; /* the simulated device's rule: memory aligned to its sector */
	io_prep_pread(&iocb, number, page + 1, 512, 0);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	reap(ctx, 1, &event);
	CHECK((long)event.res == plain);
	free(page);

	/* A read and an fsync of one remembered number in one call: both run. */
	CHECK(fcntl(number, F_SETFL, fcntl(number, F_GETFL) & ~O_DIRECT) == 0);
	CHECK(read_64(ctx, number, buf) == 64);
	struct iocb two[2];
	struct iocb *pair[2] = {&two[0], &two[1]};
	io_prep_pread(&two[0], number, buf, 64, 64);
	io_prep_fsync(&two[1], number);
	CHECK_RET(io_submit(ctx, 2, pair), 2);
	struct io_event events[2];
	reap(ctx, 2, events);
	CHECK(events[0].res == 0 || events[0].res == 64);
	CHECK(events[1].res == 0 || events[1].res == 64);
	CHECK(events[0].res + events[1].res == 64);
	close(number);
}

/* The second 4 KiB page of `fd` into the aligned `page`, as read_at (O_DIRECT-sized). */
static long read_page(io_context_t ctx, int fd, unsigned char *page)
{
	return read_at(ctx, fd, page, 4096, 4096);
}

/* Submits an fsync of `fd` and reaps it: the drop-in learns the mode of what the number
   names now (a mode remembered from an earlier call serves reads and writes only). */
static void fsync_through(io_context_t ctx, int fd)
{
	struct iocb iocb;
	struct iocb *list[1] = {&iocb};
	io_prep_fsync(&iocb, fd);
	CHECK_RET(io_submit(ctx, 1, list), 1);
	struct io_event event;
	reap(ctx, 1, &event);
	CHECK(event.res == 0);
}

/* A number the drop-in has seen name a file opened O_DIRECT (whose mode a later call may
   take from its unchanged status flags) is reused between submits: for another O_DIRECT
   file with the same flags, a write-only one, a pipe, one with O_DIRECT switched off and
   on, and none. Each answer is the kernel's for the file the number names at the submit. */
static void remembered_direct_number_reused(io_context_t ctx)
{
	unsigned char *page = aligned(4096);
	int number = temp_file(16384, 20, O_RDWR | O_DIRECT);
	fsync_through(ctx, number);
	for (int i = 0; i < 3; i++)
		CHECK(read_page(ctx, number, page) == 4096 && page[1] == file_byte(4097, 20));

	/* Same flags, another file: its bytes. */
	under_number(temp_file(16384, 21, O_RDWR | O_DIRECT), number);
	CHECK(read_page(ctx, number, page) == 4096 && page[1] == file_byte(4097, 21));
	CHECK(read_page(ctx, number, page) == 4096 && page[1] == file_byte(4097, 21));

	/* Write-only with O_DIRECT: a read is EBADF at submit. */
	under_number(temp_file(16384, 22, O_WRONLY | O_DIRECT), number);
	CHECK(read_page(ctx, number, page) == -EBADF - 100000);

	/* Read-only with O_DIRECT, then a pipe whose read end has data: the pipe's bytes. */
	under_number(temp_file(16384, 23, O_RDONLY | O_DIRECT), number);
	CHECK(read_page(ctx, number, page) == 4096 && page[1] == file_byte(4097, 23));
	int p[2];
	CHECK(pipe(p) == 0);
	CHECK(write(p[1], "piped", 5) == 5);
	under_number(p[0], number);
	CHECK(read_page(ctx, number, page) == 5 && memcmp(page, "piped", 5) == 0);
	close(p[1]);

	/* O_DIRECT switched off under the number, then on again: its bytes each time. */
	under_number(temp_file(16384, 24, O_RDWR | O_DIRECT), number);
	CHECK(read_page(ctx, number, page) == 4096 && page[1] == file_byte(4097, 24));
	CHECK(fcntl(number, F_SETFL, fcntl(number, F_GETFL) & ~O_DIRECT) == 0);
	CHECK(read_page(ctx, number, page) == 4096 && page[1] == file_byte(4097, 24));
	CHECK(fcntl(number, F_SETFL, fcntl(number, F_GETFL) | O_DIRECT) == 0);
	CHECK(read_page(ctx, number, page) == 4096 && page[1] == file_byte(4097, 24));

	/* Read-only with O_DIRECT, read twice, then closed: EBADF at submit. */
	under_number(temp_file(16384, 25, O_RDONLY | O_DIRECT), number);
	CHECK(read_page(ctx, number, page) == 4096 && page[1] == file_byte(4097, 25));
	CHECK(read_page(ctx, number, page) == 4096 && page[1] == file_byte(4097, 25));
	CHECK(close(number) == 0);
	CHECK(read_page(ctx, number, page) == -EBADF - 100000);
	free(page);
}

int main(int argc, char **argv)
{
	report_library();
	if (argc > 1 && strcmp(argv[1], "deny-kcmp") == 0)
		/* Run under seccomp_exec eperm-kcmp: the filter is there. */
		CHECK(syscall(SYS_kcmp, getpid(), getpid(), 0, 0, 0) == -1 && errno == EPERM);
	io_context_t ctx = 0;
	CHECK_RET(io_setup(16, &ctx), 0);
	int file = temp_file(8192, 5, O_RDONLY);
	if (argc > 1 && strcmp(argv[1], "reuse-only") == 0) {
		remembered_number_reused(ctx); /* also runs on the kernel's libaio */
		remembered_direct_number_reused(ctx);
		return 0;
	}
	fifth_pointer_bad(ctx, file);
	array_straddles_unmapped_page(ctx, file);
	long_batches(file);
	key_reset(ctx, file);
	fd_reused_while_in_flight(ctx);
	direct_fd_reused(ctx);
	cold_fd_reused(ctx);
	number_reused_between_submits(ctx);
	remembered_number_reused(ctx);
	remembered_direct_number_reused(ctx);
	CHECK_RET(io_destroy(ctx), 0);
	return 0;
}
