"""The trust boundary: a run, sweep, search or report folder may come from someone else.

- `files`: every file sdrun reads or writes in such a folder is opened here (no symlink
  followed, regular files only, size and depth caps, temporary files created exclusively and
  moved into place).
- `folder`: one `lstat` walk refuses links, special files and multiply-linked files in a folder
  before anything is written into it (this also covers the files Hydra and wandb write there).
- `signing`: folders this user's sdrun made are signed with a per-user key; any other folder is
  received, and nothing that reaches beyond it (wandb destination, outside paths, downloads) is
  taken from it.
"""
