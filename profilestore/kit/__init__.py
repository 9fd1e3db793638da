"""Small shared pieces every domain uses: database plumbing, errors, time, ids, hash chains."""
