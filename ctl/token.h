/* ccdockerctl token: the bearer tokens of ccdocker-httpd (token.c). */
#pragma once

#include <stdbool.h>

/* True if the command of this command line is "token" (global options may come first). */
bool token_command_requested(int argc, char *argv[]);
/* Runs "ccdockerctl [OPTIONS...] token create|list|revoke ..."; returns the exit status. */
int token_main(int argc, char *argv[]);
