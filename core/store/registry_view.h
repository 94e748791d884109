/*
 * Between the stream backend (registry_stream.c) and the SQLite backend it
 * keeps its materialised view in: rows written with the ids the log gives
 * them, a transaction per batch of applied records, and a small key/value
 * table (the last applied offset, the stream it came from, the replica's
 * publisher reference). Internal to core/store.
 */
#ifndef ESS_STORE_REGISTRY_VIEW_H
#define ESS_STORE_REGISTRY_VIEW_H

#include "store/registry.h"

int ess__view_begin(ess_registry_t *r);
int ess__view_commit(ess_registry_t *r);
/** Insert the row with its id; an existing id or uuid is left alone (replay). */
int ess__view_insert(ess_registry_t *r, const ess_es_row_t *row);
/** Delete by id; ESS_ENOTFOUND when absent; removed's routing key borrowed. */
int ess__view_remove(ess_registry_t *r, int64_t id, ess_es_row_t *removed);
int ess__view_clear(ess_registry_t *r);
/** 1 when a row with this id is in the view, 0 when not, < 0 on error. */
int ess__view_has_id(ess_registry_t *r, int64_t id);
/** The value of key (ESS_ENOTFOUND when unset) into buf. */
int ess__view_meta_get(ess_registry_t *r, const char *key, char *buf, size_t len);
int ess__view_meta_set(ess_registry_t *r, const char *key, const char *value);

#endif
