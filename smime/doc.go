// Package smime transforms RFC 5322 messages with S/MIME 4.0 (RFC 8551):
// Sign and Encrypt for outgoing mail, Open (and Verify) for incoming mail,
// and Classify to tell what a message is from its headers alone. The CMS work
// is done by package cms; this package does the MIME around it.
//
// Outgoing, the content fields (Content-*) and the body are put in canonical,
// 7-bit safe form and wrapped; every other header field stays outside, in
// order and unchanged, so that Encrypt(Sign(msg)) signs then encrypts.
//
// Incoming, Open peels the layers and returns the message a client without
// S/MIME can show, with one result per signature. Messages are taken as
// whole byte slices; an mbox "From " line must be removed by the caller.
package smime
