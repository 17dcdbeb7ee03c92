"""The CRM sink: write segment statuses and mapped attributes to Salesforce Contacts or Leads."""
