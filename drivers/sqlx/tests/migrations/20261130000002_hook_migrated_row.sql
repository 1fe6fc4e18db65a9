INSERT INTO hook_migrated VALUES (1, 'hook_migrated_row');
