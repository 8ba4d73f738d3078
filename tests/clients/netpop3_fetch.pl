# Perl's Net::POP3 fetching a maildrop:
#     perl netpop3_fetch.pl MODE HOST PORT USER PASSWORD CA.pem OUTDIR
# MODE: plain, starttls (Net::POP3->starttls) or ssl (SSL => 1); TLS needs
# IO::Socket::SSL and checks the certificate against CA.pem and HOST.
# Writes each message as get() returns it (its lines, dot-unstuffed; a
# plain socket's lines end in "\n", Net::Cmd's reader, a TLS one's in CRLF
# as sent, IO::Socket::SSL's readline) to OUTDIR/N.eml and prints "N UID SIZE" per message
# (UIDL, LIST).
use strict;
use warnings;
use Net::POP3;

my ($mode, $host, $port, $user, $password, $ca, $out) = @ARGV;
my %tls = (SSL_ca_file => $ca, SSL_verifycn_name => $host, SSL_verify_mode => 1);
my $pop = Net::POP3->new($host, Port => $port, Timeout => 20,
                         ($mode eq 'ssl' ? (SSL => 1, %tls) : ()))
    or die "connect: $@\n";
if ($mode eq 'starttls') {
    $pop->starttls(%tls) or die "starttls: " . $pop->message;
}
defined $pop->login($user, $password) or die "login: " . $pop->message;
my $uidls = $pop->uidl or die "uidl: " . $pop->message;
my $sizes = $pop->list or die "list: " . $pop->message;
for my $n (sort { $a <=> $b } keys %$uidls) {
    my $lines = $pop->get($n) or die "get $n: " . $pop->message;
    open(my $file, '>:raw', "$out/$n.eml") or die "$out/$n.eml: $!";
    print $file @$lines;
    close $file or die;
    print "$n $uidls->{$n} $sizes->{$n}\n";
}
$pop->quit or die "quit: " . $pop->message;
