# Makefile for wdc (PGXS).
#
#   make                  build the extension (wdc.so, sql/wdc--$(EXTVERSION).sql)
#   make install          install into the PostgreSQL named by PG_CONFIG
#   make check-core       build and run the PostgreSQL-free C unit tests
#   make WERROR=1         treat compiler warnings as errors (CI does this)
#
# Sources are found by wildcard, so a new file under src/<module>/ is built
# without editing this file:
#   src/core, src/nn, src/flow, src/fits   PostgreSQL-free numerical core
#   src/pg, src/latent, src/hnsw           code that includes postgres.h
#   sql/parts/NN_name.sql                  concatenated in name order into
#                                          the install script
#   test/c/test_*.c                        one core unit-test program each

EXTENSION = wdc
EXTVERSION = 0.1.0
MODULE_big = wdc
PG_CONFIG ?= pg_config

BUILD = build
PROTO_DIR = $(BUILD)/onnx
ONNX_PROTO ?= /usr/include/onnx/onnx.proto
PROTO_C = $(PROTO_DIR)/onnx.pb-c.c
PROTO_H = $(PROTO_DIR)/onnx.pb-c.h

CORE_SRCS = $(sort $(wildcard src/core/*.c src/nn/*.c src/flow/*.c src/fits/*.c))
PG_SRCS = $(sort $(wildcard src/pg/*.c src/latent/*.c src/hnsw/*.c))
OBJS = $(CORE_SRCS:.c=.o) $(PG_SRCS:.c=.o) $(PROTO_C:.c=.o)

SQL_PARTS = $(sort $(wildcard sql/parts/*.sql))
SQL_INSTALL = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA = $(SQL_INSTALL) $(wildcard sql/$(EXTENSION)--*--*.sql)

# Our warnings on top of the PGXS flags.  -Wunused-parameter is off because
# every fmgr function receives fcinfo whether it reads it or not, and
# -Wmissing-field-initializers because PostgreSQL's designated-initializer
# tables rely on zero-filling.
WDC_WARN = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
# PostgreSQL's headers are included as system headers so that -Wextra
# judges our code, not macros such as ARR_DATA_PTR.
PG_CPPFLAGS = -Isrc -I$(PROTO_DIR) -isystem $(shell $(PG_CONFIG) --includedir-server)
PG_CFLAGS = $(WDC_WARN) -std=gnu11 $(if $(WERROR),-Werror)
SHLIB_LINK = -lopenblas -lcfitsio -lwcs -lprotobuf-c -lpng16 -lz -lm

EXTRA_CLEAN = $(SQL_INSTALL) $(BUILD)

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Preprocessing runs its loops over every pixel of every image encoded.  At
# -O2, GCC 12 vectorizes only loops that need no scalar remainder;
# -ftree-vectorize lets it vectorize loops over any pixel count.
VECTORIZE = -ftree-vectorize
src/fits/preprocess.o: override CFLAGS += $(VECTORIZE)
$(BUILD)/core/src/fits/preprocess.o: CORE_CFLAGS += $(VECTORIZE)

# The extension objects depend on the generated protobuf header, and on a
# stamp file rewritten (at parse time, because PGXS marks every target
# .SECONDARY) only when WERROR changes, so that switching it recompiles.
FLAGS_STAMP := $(BUILD)/cflags.stamp
FLAGS_NOW := werror=$(WERROR)
$(shell mkdir -p $(BUILD); [ "$$(cat $(FLAGS_STAMP) 2>/dev/null)" = "$(FLAGS_NOW)" ] || echo "$(FLAGS_NOW)" > $(FLAGS_STAMP))
$(OBJS): $(PROTO_H) $(FLAGS_STAMP)

$(PROTO_C) $(PROTO_H): $(ONNX_PROTO)
	@mkdir -p $(PROTO_DIR)
	protoc-c --c_out=$(PROTO_DIR) -I$(dir $(ONNX_PROTO)) $(ONNX_PROTO)

$(SQL_INSTALL): $(SQL_PARTS)
	cat $(SQL_PARTS) > $@

all: $(SQL_INSTALL)

# --- PostgreSQL-free unit tests ------------------------------------------
# The core is compiled a second time without any PostgreSQL include path, so
# an accidental "#include postgres.h" fails here.
CORE_CC ?= $(CC)
CORE_CFLAGS = -O2 -g -std=gnu11 -fno-strict-aliasing $(WDC_WARN) $(if $(WERROR),-Werror) \
	-Isrc -I$(PROTO_DIR) $(CORE_EXTRA_CFLAGS)
CORE_LIBS = -lopenblas -lcfitsio -lwcs -lprotobuf-c -lpng16 -lz -lm
CORE_TEST_OBJS = $(patsubst %.c,$(BUILD)/core/%.o,$(CORE_SRCS) $(PROTO_C))
CORE_TESTS = $(patsubst test/c/%.c,$(BUILD)/test/%,$(sort $(wildcard test/c/test_*.c)))

# Headers are few and shared widely, so any change to one rebuilds every
# object rather than tracking dependencies per file.
SRC_HEADERS = $(wildcard src/*/*.h)
$(OBJS): $(SRC_HEADERS)

$(BUILD)/core/%.o: %.c $(PROTO_H) $(FLAGS_STAMP) $(SRC_HEADERS)
	@mkdir -p $(dir $@)
	$(CORE_CC) $(CORE_CFLAGS) -c $< -o $@

$(BUILD)/test/%: test/c/%.c $(CORE_TEST_OBJS) $(wildcard test/c/*.h)
	@mkdir -p $(dir $@)
	$(CORE_CC) $(CORE_CFLAGS) -Itest/c $< $(CORE_TEST_OBJS) $(CORE_LIBS) -o $@

core-tests: $(CORE_TESTS)

# Each program prints one line per case and ends with "N passed, N failed".
check-core: core-tests
	@scripts/run-core-tests $(CORE_TESTS)

.PHONY: core-tests check-core
