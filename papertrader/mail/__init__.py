"""Mail to account owners: the SMTP sender (:mod:`.smtp`) and the texts (:mod:`.messages`)."""
