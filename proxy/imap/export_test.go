package imap

// MaxPinned lets tests make the FETCH parts small.
var MaxPinned = &maxPinned
