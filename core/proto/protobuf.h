/*
 * Binary protobuf payloads of the Squonk2 account server and Data Manager
 * (the .proto files in proto/, compiled by protoc-c): find a message type by name,
 * render a payload as the account server's one-line text form
 * ("accountserver.MerchantProcessingCharge|timestamp: \"...\" ..."), and
 * the descriptor-walking helpers the Lua table form (script/protobuf_lua.h)
 * shares. Pure: no I/O, no Lua. See docs/protobuf.md for the
 * exact text and table forms.
 */
#ifndef ESS_PROTO_PROTOBUF_H
#define ESS_PROTO_PROTOBUF_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "mq/amqp10.h"
#include "util/buf.h"

/**
 * 1 when an AMQP content type marks a binary protobuf payload:
 * "application/x-protobuf" or "application/protobuf", any case, with or
 * without parameters after ';'. 0 otherwise (also for NULL).
 */
int ess_protobuf_is_content_type(const char *ct, size_t len);

/**
 * The descriptor of a known message type, or NULL. Accepted spellings, any
 * case: the short name ("MerchantProcessingCharge"), the text-form name
 * ("accountserver.MerchantProcessingCharge"), and the protobuf full name
 * ("informaticsmatters.protobuf.accountserver.MerchantProcessingChargeMessage"),
 * each with or without the "Message" suffix. The descriptor is static.
 */
const ProtobufCMessageDescriptor *ess_protobuf_find(const char *type, size_t type_len);

/**
 * The text-form name of a descriptor that ess_protobuf_find returns
 * ("accountserver.MerchantProcessingCharge"): static, NUL-terminated.
 * For any other descriptor, its protobuf full name.
 */
const char *ess_protobuf_name(const ProtobufCMessageDescriptor *d);

/** Number of known types; ess_protobuf_type_at(i) is the descriptor of the i-th. */
size_t ess_protobuf_type_count(void);
const ProtobufCMessageDescriptor *ess_protobuf_type_at(size_t i);

/**
 * Whether a decoded stream record is a protobuf payload, and its message
 * type: the content type must pass ess_protobuf_is_content_type; the type
 * is the application property "message_type" (a string or symbol), else
 * the application property "x-basic-type" (where RabbitMQ 3.10 puts an
 * AMQP 0-9-1 publisher's basic.properties.type), else properties.subject.
 * On ESS_OK *type and
 * *type_len borrow the record that m was decoded from; the type may still
 * be unknown (ess_protobuf_find decides). ESS_ENOTFOUND when the record is
 * not protobuf or carries no type; ESS_EINVAL for NULL arguments.
 */
int ess_protobuf_type_of(const ess_amqp10_msg_t *m, const char **type, size_t *type_len);

/**
 * Render bytes of the given type into the text form, appended to out:
 * the text-form name, '|', then the protobuf text format of the message on
 * one line (Python's text_format.MessageToString(msg, as_one_line=True)).
 * ESS_OK; ESS_ENOTFOUND (unknown type) or ESS_EINVAL (bytes do not decode,
 * or a NULL argument), with out unchanged. Never crashes on bad bytes.
 */
int ess_protobuf_to_text(const char *type, size_t type_len, const uint8_t *p, size_t len,
                         ess_buf_t *out);

/**
 * As ess_protobuf_to_text for any descriptor (also ones not listed by
 * ess_protobuf_find), without the "name|" prefix: only the fields.
 * ESS_OK or ESS_EINVAL, with out unchanged on error.
 */
int ess_protobuf_render(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                        ess_buf_t *out);

/** Bytes one element of a field of type t takes in an unpacked message. */
size_t ess_protobuf_elem_size(ProtobufCType t);

/**
 * Whether singular field fd of unpacked message m is present, with proto3
 * semantics for fields without presence: a default (zero, empty) value is
 * absent, as Python's text format omits it. A scalar compares by bits, so
 * -0.0 is present. Oneof members: present when the oneof selects them.
 */
int ess_protobuf_is_present(const ProtobufCFieldDescriptor *fd, const void *m);

#endif
