# `make dropin`: target/release/libaio.so.1, a drop-in for the system's libaio (soname
# libaio.so.1, libaio 0.3.113's symbol versions), with libaio.so and libaio.so.1t64 links.
# The Rust crate is built as a static library and linked here with the system C compiler:
# only a version script given to the final link can put version nodes on the symbols.

CARGO ?= cargo
CC ?= cc
RELEASE := target/release
LIBAIO_CRATE := crates/aioctx-libaio

.PHONY: dropin
dropin:
	$(CARGO) build --release -p aioctx-libaio
	$(CC) -shared -fPIC -O2 -o $(RELEASE)/libaio.so.1 \
		-Wl,-soname,libaio.so.1 \
		-Wl,--version-script=$(LIBAIO_CRATE)/libaio.map \
		$(LIBAIO_CRATE)/src/symver.c \
		-Wl,--whole-archive $(RELEASE)/libaioctx_libaio.a -Wl,--no-whole-archive \
		-lgcc_s -lpthread -ldl -lm -lc
	ln -sf libaio.so.1 $(RELEASE)/libaio.so
	ln -sf libaio.so.1 $(RELEASE)/libaio.so.1t64
