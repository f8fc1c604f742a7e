"""The gateway's control plane: the CAs, the policy, the relay's and the site's generated sshd
configs, the agent's supervision, the audit log. Stock OpenSSH moves every byte; nothing here
does."""
