/* A small key-value writer with crash recovery, for the simulator's power loss through the
   drop-in (AIOCTX_ENGINE=sim AIOCTX_SIM=...,crash=N). It runs unchanged on any libaio.

   kv write PATH N: appends N records of 128 bytes, each written with IOCB_CMD_PWRITE and
   made durable with IOCB_CMD_FDSYNC before it is acknowledged ("acked I" on stdout). When
   a request fails (the machine lost power: EIO) it says "crashed after K" and stops.
   kv recover PATH: reads the records back, in order, up to the first that does not check
   out, and says "recovered K". */
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RECORD 128

static uint32_t checksum(const char *bytes, size_t len)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)bytes[i]) * 16777619u;
	return h;
}

/* key, value, then the checksum of everything before it in the last 4 bytes. */
static void make_record(int i, char *record)
{
	memset(record, 0, RECORD);
	snprintf(record, RECORD - 4, "key%06d=value-%06d-%s", i, i * 7, "payload");
	uint32_t sum = checksum(record, RECORD - 4);
	memcpy(record + RECORD - 4, &sum, 4);
}

static long run_one(io_context_t ctx, struct iocb *iocb)
{
	struct iocb *list[1] = {iocb};
	struct io_event event;
	int ret = io_submit(ctx, 1, list);
	if (ret != 1)
		return ret < 0 ? ret : -EAGAIN;
	ret = io_getevents(ctx, 1, 1, &event, NULL);
	if (ret != 1)
		return ret < 0 ? ret : -EINTR;
	return (long)event.res;
}

static int write_records(const char *path, int n)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	io_context_t ctx = 0;
	int ret = io_setup(8, &ctx);
	if (ret < 0) {
		fprintf(stderr, "io_setup: %s\n", strerror(-ret));
		return 1;
	}
	static char record[RECORD];
	int acked = 0;
	for (int i = 0; i < n; i++) {
		struct iocb iocb;
		make_record(i, record);
		io_prep_pwrite(&iocb, fd, record, RECORD, (long long)i * RECORD);
		long res = run_one(ctx, &iocb);
		if (res == RECORD) {
			io_prep_fdsync(&iocb, fd);
			res = run_one(ctx, &iocb);
		}
		if (res == -EIO) {
			printf("crashed after %d\n", acked);
			break;
		}
		if (res != 0) {
			fprintf(stderr, "record %d: unexpected result %ld\n", i, res);
			return 1;
		}
		acked = i + 1;
		printf("acked %d\n", i);
		fflush(stdout);
	}
	if (acked == n)
		printf("done %d\n", n);
	io_destroy(ctx);
	close(fd);
	return 0;
}

static int recover(const char *path)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	char got[RECORD], want[RECORD];
	int k = 0;
	while (pread(fd, got, RECORD, (off_t)k * RECORD) == RECORD) {
		make_record(k, want);
		if (memcmp(got, want, RECORD) != 0)
			break;
		k++;
	}
	close(fd);
	printf("recovered %d\n", k);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "write") == 0)
		return write_records(argv[2], atoi(argv[3]));
	if (argc == 3 && strcmp(argv[1], "recover") == 0)
		return recover(argv[2]);
	fprintf(stderr, "usage: kv write PATH N | kv recover PATH\n");
	return 2;
}
