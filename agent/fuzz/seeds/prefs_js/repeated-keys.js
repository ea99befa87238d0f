user_pref("mail.accountmanager.accounts", "a,a,b,c");
user_pref("mail.account.a.identities", "i,i,j");
user_pref("mail.account.b.identities", "i");
user_pref("mail.identity.i.htmlSigText", "Anna");
user_pref("mail.smtpservers", "s,s");
