/* SPEC §1, the seed's race: many threads set up a context, submit an O_DIRECT read into a
   buffer, destroy, overwrite the buffer with a canary and check that no late completion
   ever changes it. Without a destroy that waits, the read lands after the canary. */
#include "check.h"

#define THREADS 8
#define ROUNDS 40
#define SIZE (256 * 1024)

static int file;

static void *round_trip(void *arg)
{
	(void)arg;
	unsigned char *buf = aligned(SIZE);
	for (int round = 0; round < ROUNDS; round++) {
		io_context_t ctx = 0;
		CHECK_RET(io_setup(4, &ctx), 0);
		struct iocb rd;
		struct iocb *list[1] = {&rd};
		io_prep_pread(&rd, file, buf, SIZE, (long long)(round % 16) * SIZE);
		CHECK_RET(io_submit(ctx, 1, list), 1);
		CHECK_RET(io_destroy(ctx), 0);
		memset(buf, 0xc5, SIZE);
		usleep(1000);
		for (size_t i = 0; i < SIZE; i++)
			CHECK(buf[i] == 0xc5);
	}
	free(buf);
	return NULL;
}

int main(void)
{
	report_library();
	file = temp_file(16 * SIZE, 9, O_RDONLY | O_DIRECT);
	pthread_t threads[THREADS];
	for (int i = 0; i < THREADS; i++)
		CHECK(pthread_create(&threads[i], NULL, round_trip, NULL) == 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	close(file);
	puts("ok");
	return 0;
}
