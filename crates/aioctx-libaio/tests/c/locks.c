/* POSIX record locks survive AIO where the library keeps no copy of the fd: the program
   write-locks its file, reads and writes it through a context, and a child (another
   owner) still finds the lock held after every reap and after destroy. Closing any
   descriptor of a file drops the process's record locks on it, so a copy the library
   closed would show here. Buffered cached reads and writes run inline on every engine;
   with "direct", O_DIRECT reads and writes (io_uring and kaio hand them to the kernel).
   Usage: locks [direct] */
#include "check.h"
#include <sys/wait.h>

#define SIZE (256 * 1024)

/* Whether another process sees a write lock on the whole file that `fd` names. */
static int write_locked(int fd)
{
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		_exit(fcntl(fd, F_GETLK, &lock) == 0 && lock.l_type == F_WRLCK ? 0 : 1);
	}
	int status;
	CHECK(waitpid(child, &status, 0) == child);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(int argc, char **argv)
{
	report_library();
	int direct = argc > 1 && strcmp(argv[1], "direct") == 0;
	int fd = temp_file(SIZE, 3, O_RDWR | (direct ? O_DIRECT : 0));
	struct flock lock = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	CHECK(fcntl(fd, F_SETLK, &lock) == 0);
	CHECK(write_locked(fd));
	io_context_t ctx = 0;
	CHECK_RET(io_setup(64, &ctx), 0);
	unsigned char *buf = aligned(SIZE);
	enum { PER_ROUND = 16 };
	struct iocb iocbs[PER_ROUND], *list[PER_ROUND];
	struct io_event events[PER_ROUND];
	for (int round = 0; round < 8; round++) {
		int write = round % 2;
		for (int i = 0; i < PER_ROUND; i++) {
			unsigned char *at = buf + i * 4096;
			if (write)
				io_prep_pwrite(&iocbs[i], fd, at, 4096, (off_t)i * 4096);
			else
				io_prep_pread(&iocbs[i], fd, at, 4096, (off_t)i * 4096);
			list[i] = &iocbs[i];
		}
		CHECK_RET(io_submit(ctx, PER_ROUND, list), PER_ROUND);
		reap(ctx, PER_ROUND, events);
		for (int i = 0; i < PER_ROUND; i++)
			CHECK(events[i].res == 4096);
		if (!write)
			check_whole_reads(events, PER_ROUND, 4096, 3);
		CHECK(write_locked(fd));
	}
	CHECK_RET(io_destroy(ctx), 0);
	CHECK(write_locked(fd));
	printf("locks: held through %s reads and writes\n", direct ? "O_DIRECT" : "buffered");
	return 0;
}
