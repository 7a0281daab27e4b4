/* The symbols libaio exports under two versions: a default (@@) and an old compat form (@).
   A symbol version can only be bound to a function defined in the same object, so each
   version gets a one-line wrapper here over the Rust function that implements it. */

struct timespec;

extern int aioctx_io_getevents_0_4(void *ctx, long min_nr, long nr, void *events,
				   struct timespec *timeout);
extern int aioctx_io_getevents_0_1(void *ctx, long nr, void *events, struct timespec *timeout);
extern int aioctx_io_cancel_0_4(void *ctx, void *iocb, void *result);
extern int aioctx_io_cancel_0_1(void *ctx, void *iocb);
extern int aioctx_io_queue_wait(void *ctx, struct timespec *timeout);

__asm__(".symver io_getevents_0_4, io_getevents@@LIBAIO_0.4");
int io_getevents_0_4(void *ctx, long min_nr, long nr, void *events, struct timespec *timeout)
{
	return aioctx_io_getevents_0_4(ctx, min_nr, nr, events, timeout);
}

__asm__(".symver io_getevents_0_1, io_getevents@LIBAIO_0.1");
int io_getevents_0_1(void *ctx, long nr, void *events, struct timespec *timeout)
{
	return aioctx_io_getevents_0_1(ctx, nr, events, timeout);
}

__asm__(".symver io_cancel_0_4, io_cancel@@LIBAIO_0.4");
int io_cancel_0_4(void *ctx, void *iocb, void *result)
{
	return aioctx_io_cancel_0_4(ctx, iocb, result);
}

__asm__(".symver io_cancel_0_1, io_cancel@LIBAIO_0.1");
int io_cancel_0_1(void *ctx, void *iocb)
{
	return aioctx_io_cancel_0_1(ctx, iocb);
}

__asm__(".symver io_queue_wait_0_4, io_queue_wait@@LIBAIO_0.4");
int io_queue_wait_0_4(void *ctx, struct timespec *timeout)
{
	return aioctx_io_queue_wait(ctx, timeout);
}

__asm__(".symver io_queue_wait_0_1, io_queue_wait@LIBAIO_0.1");
int io_queue_wait_0_1(void *ctx, struct timespec *timeout)
{
	return aioctx_io_queue_wait(ctx, timeout);
}
