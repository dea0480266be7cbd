// Package statedir creates what the agent keeps in its state directory
// (--state-dir) with its final permissions from the moment it appears
// under its name:
//
//   - Unix sockets (the local API's sluice.sock, the Hubble observer's
//     hubble.sock) are mode 0660, owned by the agent (root) and a group
//     the operator chooses (--socket-group). ListenUnix binds each one in
//     a private 0700 directory, sets its mode and group there, and renames
//     it into place: a client can never find the socket at a wider mode or
//     the wrong group, whatever the process's umask.
//   - State files (the files source's last good model, the identities) are
//     mode 0600 and written atomically (temporary file, fsync, rename), so a
//     crash leaves the previous version rather than a torn file. They name
//     every pod, label and policy of the node: root's business only.
package statedir
