// Jakarta Mail's POP3 provider (Debian libjakarta-mail-java) fetching a
// maildrop: java -cp jakarta-mail.jar:jakarta-activation.jar JakartaFetch.java
//     MODE HOST PORT USER PASSWORD CA.pem OUTDIR
// MODE: plain (pop3), starttls (pop3 with STLS required) or ssl (pop3s).
// Writes each message's octets to OUTDIR/N.eml (MimeMessage.writeTo of the
// untouched POP3Message: what RETR sent, dot-unstuffed) and prints
// "N UID" per message (POP3Folder.getUID).
// The server certificate is checked against CA.pem and the host name.

import com.sun.mail.pop3.POP3Folder;
import jakarta.mail.Folder;
import jakarta.mail.Message;
import jakarta.mail.Session;
import jakarta.mail.Store;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import java.util.Properties;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class JakartaFetch {
    public static void main(String[] args) throws Exception {
        String mode = args[0], host = args[1], user = args[3], password = args[4];
        int port = Integer.parseInt(args[2]);
        Path out = Path.of(args[6]);

        KeyStore trusted = KeyStore.getInstance(KeyStore.getDefaultType());
        trusted.load(null, null);
        try (InputStream pem = new FileInputStream(args[5])) {
            trusted.setCertificateEntry("ca",
                CertificateFactory.getInstance("X.509").generateCertificate(pem));
        }
        TrustManagerFactory trust =
            TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        trust.init(trusted);
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(null, trust.getTrustManagers(), null);

        String protocol = mode.equals("ssl") ? "pop3s" : "pop3";
        Properties props = new Properties();
        props.put("mail." + protocol + ".ssl.socketFactory", tls.getSocketFactory());
        props.put("mail." + protocol + ".ssl.checkserveridentity", "true");
        props.put("mail." + protocol + ".connectiontimeout", "20000");
        props.put("mail." + protocol + ".timeout", "20000");
        if (mode.equals("starttls")) {
            props.put("mail.pop3.starttls.enable", "true");
            props.put("mail.pop3.starttls.required", "true");
        }
        Store store = Session.getInstance(props).getStore(protocol);
        store.connect(host, port, user, password);
        POP3Folder inbox = (POP3Folder) store.getFolder("INBOX");
        inbox.open(Folder.READ_ONLY);
        for (Message message : inbox.getMessages()) {
            int number = message.getMessageNumber();
            try (OutputStream file = new FileOutputStream(out.resolve(number + ".eml").toFile())) {
                message.writeTo(file);
            }
            System.out.println(number + " " + inbox.getUID(message));
        }
        inbox.close(false);
        store.close();
    }
}
