/* The includes every cmocka unit test starts with. cmocka.h needs these four headers before it, an
 * order that clang-format's include sorting would undo in each test file, so it is kept here once. */
#pragma once

/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */
